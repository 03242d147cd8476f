"""Fixtures of the browser tests: the recovery e2e harness on this test's database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from orbit_pipelines_tests.processes import ChildProcesses
from orbit_pipelines_tests.sensors.harness import Harness


@pytest.fixture
def harness(
    dagster_home: Path, db_url: str, engine: Engine, children: ChildProcesses, tmp_path: Path
) -> Harness:
    """A Dagster deployment (nothing started yet) on this test's database."""
    return Harness(home=dagster_home, db_url=db_url, engine=engine, children=children, tmp=tmp_path)
