"""`orbit status`: labeled timestamps, the latest run's own start time, side effects
explained, and a recovery history without stack traces or secrets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from orbit_pipelines.store.recoveries import claim_recovery
from orbit_pipelines_tests.cli.conftest import CliResult
from orbit_pipelines_tests.cli.jobs import bad_input_job
from orbit_pipelines_tests.cli.test_runs_cli import _failed_run

TRACE = (
    "launch failed: boom at postgresql://etl:hunter2@db/orbit\n"
    "Traceback (most recent call last):\n"
    '  File "/x/launch.py", line 12, in launch\n'
    "dagster._core.errors.DagsterInvalidConfigError: bad"
)


def test_status_history_has_no_traceback_and_labels_its_times(
    dagster_home: Path, engine: Engine, orbit_cli: Callable[..., CliResult]
) -> None:
    run_id = _failed_run(bad_input_job)
    with engine.begin() as conn:
        claim_recovery(
            conn,
            parent_run_id=run_id,
            root_run_id=run_id,
            job_name="bad_input_job",
            attempt=1,
            reason="failed",
            detail=TRACE,
            decided_by="sensor",
            status="held",
        )
    text = orbit_cli("status", run_id).stdout
    assert "Traceback" not in text and 'File "' not in text and "hunter2" not in text
    assert "launch failed: boom" in text
    assert "detected at " in text and "started at " in text and "last activity at " in text
    assert "run group started at " in text
    assert "Last error: E-1003:" in text

    data = json.loads(orbit_cli("status", run_id, "--json").stdout)
    (rec,) = data["recoveries"]
    assert "Traceback" not in rec["detail"] and "hunter2" not in rec["detail"]
    assert data["failed_step"] == "reject_input"
    assert data["latest_run_started_at"] is not None
