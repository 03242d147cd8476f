"""Fixtures of the pipeline tests: a carrier process wired into the env the jobs' resources
read, and the real code location under a real daemon for the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from orbit_examples.carrier.resource import CARRIER_TOKEN_ENV, CARRIER_URL_ENV
from orbit_pipelines_tests.carrier.running import TOKEN, RunningCarrier, start_carrier
from orbit_pipelines_tests.pipelines.location_harness import LocationHarness
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


@pytest.fixture
def location(
    dagster_home: Path, db_url: str, engine: Engine, children: ChildProcesses, tmp_path: Path
) -> LocationHarness:
    """``orbit_examples.definitions`` on this test's database (daemon not started yet:
    start it after the env it must inherit, e.g. the carrier's URL, is set)."""
    return LocationHarness(
        home=dagster_home, db_url=db_url, engine=engine, children=children, tmp=tmp_path
    )
