"""Many runs in a real Dagster instance, quickly: one run is created for the job, the others
are copies of it with their own ids (same snapshots), added to run storage; a failed run is
failed by a reported RUN_FAILURE event, as a run worker or the code server would."""

from __future__ import annotations

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, job, op
from dagster._core.utils import make_new_run_id


@op
def quiet_op() -> None:
    """Never executed: the runs exist in storage only."""


@job
def quiet_job() -> None:
    """A one-step job."""
    quiet_op()


def started_runs(
    instance: DagsterInstance, count: int, tags: dict[str, str] | None = None
) -> list[DagsterRun]:
    """``count`` STARTED runs of ``quiet_job``."""
    if count <= 0:
        return []
    # Dagster's storages open a connection per statement (NullPool) unless told they live in
    # a long process; thousands of writes spent most of their time connecting (11 ms each).
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=5)
    first = instance.create_run_for_job(
        job_def=quiet_job, status=DagsterRunStatus.STARTED, tags=tags
    )
    runs = [first]
    for _ in range(count - 1):
        runs.append(instance.add_run(first._replace(run_id=make_new_run_id())))
    return runs


def failed_runs(
    instance: DagsterInstance,
    count: int,
    tags: dict[str, str] | None = None,
    message: str = "worker lost",
) -> list[str]:
    """``count`` runs failed by a RUN_FAILURE event each; their ids in failure order."""
    ids: list[str] = []
    for run in started_runs(instance, count, tags):
        instance.report_run_failed(run, message)
        ids.append(run.run_id)
    return ids
