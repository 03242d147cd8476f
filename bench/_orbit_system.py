"""System (a): orbit_pipelines, driven like (b) so that the row ledger is the only difference."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from _systems import DagsterSystem

from orbit_pipelines.processes import ChildProcesses

RECEIVERS = ("transactional", "unsafe")


def orbit_unavailable() -> str | None:
    """Why orbit cannot be benchmarked in this tree, or None when it can."""
    try:
        from orbit_pipelines.dagster_io.row_steps import run_rows  # noqa: F401
    except ImportError as error:
        return f"orbit's row executor is not importable ({error})"
    return None


class OrbitSystem(DagsterSystem):
    """(a) The same job as (b), its op running the rows through orbit's ``run_rows``."""

    name = "orbit"
    script: ClassVar[str] = "_orbit_worker.py"
    crash_and_recovery = (
        "execute_job (multiprocess executor), the op runs the rows through run_rows "
        "(RowExecutor keyed by the run group's root run id); the step subprocess SIGKILLs "
        "itself at the kill row; the run worker marks the run FAILURE; a new process calls execute_job with "
        "ReexecutionOptions.from_failure(parent), as in (b) (orbit's recovery sensor launches "
        "the same from-failure re-execution through the daemon's run queue; the sensor and "
        "daemon are not part of this bench); the executor loads the root run's done set and "
        "skips the committed rows"
    )

    def __init__(
        self,
        children: ChildProcesses,
        workdir: Path,
        urls: dict[str, str],
        *,
        receiver: str = "transactional",
        batch_size: int = 1000,
    ) -> None:
        super().__init__(children, workdir, urls)
        self.receiver = receiver
        self.batch_size = batch_size

    def scenario_env(self) -> dict[str, str]:
        """Dagster's instance in the bench database, plus how orbit delivers the effect."""
        env = super().scenario_env()
        env["BENCH_ORBIT_RECEIVER"] = self.receiver
        env["BENCH_ORBIT_BATCH_SIZE"] = str(self.batch_size)
        return env
