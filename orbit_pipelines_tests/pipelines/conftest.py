"""A carrier process for the pipeline tests, wired into the env the jobs' resources read."""

from __future__ import annotations

from pathlib import Path

import pytest

from orbit_pipelines.dagster_io.carrier_resource import CARRIER_TOKEN_ENV, CARRIER_URL_ENV
from orbit_pipelines_tests.carrier.running import TOKEN, RunningCarrier, start_carrier
from orbit_pipelines_tests.processes import ChildProcesses


@pytest.fixture
def carrier(
    children: ChildProcesses,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> RunningCarrier:
    """A carrier on this test's database; ORBIT_CARRIER_URL/TOKEN point at it."""
    running = start_carrier(children, db_url, tmp_path / "carrier")
    monkeypatch.setenv(CARRIER_URL_ENV, running.url)
    monkeypatch.setenv(CARRIER_TOKEN_ENV, TOKEN)
    return running
