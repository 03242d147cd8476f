"""Fixtures of the Celery tests: the carrier, and the Celery code location under a daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from orbit_examples.carrier.resource import CARRIER_TOKEN_ENV, CARRIER_URL_ENV
from orbit_pipelines_tests.carrier.running import TOKEN, RunningCarrier, start_carrier
from orbit_pipelines_tests.celery.celery_harness import CeleryHarness, broker_answers
from orbit_pipelines_tests.processes import ChildProcesses


@pytest.fixture
def carrier(
    children: ChildProcesses, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> RunningCarrier:
    """A carrier on this test's database; ORBIT_CARRIER_URL/TOKEN point at it."""
    running = start_carrier(children, db_url, tmp_path / "carrier")
    monkeypatch.setenv(CARRIER_URL_ENV, running.url)
    monkeypatch.setenv(CARRIER_TOKEN_ENV, TOKEN)
    return running


@pytest.fixture
def celery(
    dagster_home: Path, db_url: str, engine: Engine, children: ChildProcesses, tmp_path: Path
) -> CeleryHarness:
    """The Celery code location on this test's database (no daemon, no worker yet)."""
    # RabbitMQ runs on every development and CI machine of this project: its absence is a
    # broken machine, not a reason to skip.
    assert broker_answers(), "RabbitMQ is not answering on 127.0.0.1:5672"
    return CeleryHarness(
        home=dagster_home, db_url=db_url, engine=engine, children=children, tmp=tmp_path
    )
