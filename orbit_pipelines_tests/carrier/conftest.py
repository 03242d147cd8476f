"""A real carrier process on a free port, on the test's own database."""

from __future__ import annotations

from pathlib import Path

import pytest

from orbit_pipelines_tests.carrier.running import RunningCarrier, start_carrier
from orbit_pipelines_tests.processes import ChildProcesses


@pytest.fixture
def carrier(children: ChildProcesses, db_url: str, tmp_path: Path) -> RunningCarrier:
    """A carrier process for this test (killed when the test ends)."""
    return start_carrier(children, db_url, tmp_path)
