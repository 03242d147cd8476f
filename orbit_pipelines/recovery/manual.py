"""What a person may decide that the sensor never does on its own: start a run group over,
or abandon it.

Both reuse the sensor's machinery (the run is created from the parent's code origins and
submitted to Dagster's queue, exactly like a recovery launch; a live run is stopped the way
a hung run is), so the CLI has no launch path of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from sqlalchemy import Engine

from orbit_pipelines.errors import E4010_NOT_RECOVERABLE, OrbitError
from orbit_pipelines.recovery import dagster_private as dp
from orbit_pipelines.recovery.child_run import child_run_tags, create_run_like, selected_subset
from orbit_pipelines.recovery.detect import Candidate
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.recovery.settle import terminate_hung
from orbit_pipelines.store.heartbeats import heartbeats_for_runs
from orbit_pipelines.store.recoveries import set_group_control
from orbit_pipelines.tags import RESTART_OF_TAG

_ACTIVE = (
    DagsterRunStatus.STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.CANCELING,
)


@dataclass(frozen=True)
class CancelResult:
    """What `cancel` did to the latest run of a group."""

    run_id: str
    was: str
    note: str


def restart_group(instance: DagsterInstance, engine: Engine, root: DagsterRun) -> str:
    """Start ``root``'s job over as a new run group with the same config; abandon the old group.

    Returns the new run's id. The new group has its own checkpoints, so every row and every
    side effect runs again: the CLI asks for confirmation first.
    """
    if root.remote_job_origin is None or root.job_code_origin is None:
        raise OrbitError(
            E4010_NOT_RECOVERABLE,
            f"run {root.run_id} was not launched through a code location; it cannot be restarted",
        )
    job_def = dp.recon_job_from_origin(root.job_code_origin).get_definition()
    subset = selected_subset(job_def, root)
    # A new group keeps what the run was for (partition, backfill while it runs, user tags)
    # but none of the old group's ids.
    tags = {**child_run_tags(instance, job_def, root), RESTART_OF_TAG: root.run_id}
    plan = dp.create_execution_plan(subset, root.run_config, tags=tags)
    run = create_run_like(
        instance, subset, plan, root, run_id=None, tags=tags, root_run_id=None, parent_run_id=None
    )
    # The queued run coordinator only enqueues; the daemon launches it like any run.
    instance.submit_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    with engine.begin() as conn:
        set_group_control(
            conn, root.run_id, abandoned=True, note=f"restarted as run group {run.run_id}"
        )
    return run.run_id


def cancel_group(
    instance: DagsterInstance,
    engine: Engine,
    root_run_id: str,
    latest: DagsterRun,
    settings: RecoverySettings,
) -> CancelResult:
    """Stop the group's latest run if it is active, and mark the group abandoned so that
    automatic recovery leaves it alone."""
    was = latest.status.value
    note = "already ended"
    if latest.status in _ACTIVE:
        with engine.connect() as conn:
            beats = heartbeats_for_runs(conn, [latest.run_id])
        candidate = Candidate(
            run_id=latest.run_id,
            root_run_id=root_run_id,
            job_name=latest.job_name,
            status=was,
            reason="manual",
            detail="cancelled by a person",
            pids=tuple((b.host, b.pid) for b in beats),
        )
        note = terminate_hung(instance, candidate, settings)
        current = instance.get_run_by_id(latest.run_id)
        if current is not None and current.status in _ACTIVE:
            instance.report_run_canceled(current, "cancelled by `orbit cancel`")
            note += "; marked CANCELED"
    with engine.begin() as conn:
        set_group_control(conn, root_run_id, abandoned=True, note="cancelled by orbit cancel")
    return CancelResult(latest.run_id, was, note)
