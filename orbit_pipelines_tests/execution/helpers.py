"""Shared bits of the executor tests."""

from __future__ import annotations

from sqlalchemy import Engine

from orbit_pipelines.execution import ExecutorOptions, RowExecutor, RunScope
from orbit_pipelines.execution.scope import OnError


class Crash(BaseException):
    """Stands in for a SIGKILL inside one process: nothing in the executor catches it, so
    the open batch transaction is abandoned exactly as a dead process would leave it."""


def executor(
    engine: Engine,
    *,
    run_id: str = "run-1",
    root_run_id: str = "root-1",
    step_key: str = "step",
    batch_size: int = 1,
    on_error: OnError = "fail_fast",
) -> RowExecutor:
    """An executor on the test database."""
    return RowExecutor(
        engine,
        RunScope(root_run_id=root_run_id, run_id=run_id, step_key=step_key),
        ExecutorOptions(batch_size=batch_size, on_error=on_error, heartbeat_every_s=0.2),
    )
