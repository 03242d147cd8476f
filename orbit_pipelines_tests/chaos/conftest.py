"""Fixtures of the chaos tests."""

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
    """The recovery e2e tests' deployment (e2e code location, daemon not started yet)."""
    return Harness(home=dagster_home, db_url=db_url, engine=engine, children=children, tmp=tmp_path)
