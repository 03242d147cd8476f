"""Launch one re-execution "from failure" of a failed run, into the same run group, once.

Mechanism: create the run in Dagster's storage (steps that did not finish, parent/root ids
and tags set, the parent's code origins) and submit it to the instance's run queue; the
daemon's run coordinator dequeues it and launches it through the code location like any run
from the UI. Why this and not ``execute_job`` in a spawned process or GraphQL: see
``orbit_pipelines/recovery/README.md``.

Exactly once: ``orbit.recoveries`` has one row per parent run (UNIQUE), claimed with INSERT
... ON CONFLICT DO NOTHING; the recovery run's id is derived from the parent's, so even a
launcher that takes over a crashed launcher's row cannot create a second run.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    JobDefinition,
    QueuedRunCoordinator,
)
from sqlalchemy import Engine

from orbit_pipelines.errors import E2008_BAD_CONFIG, E4010_NOT_RECOVERABLE, OrbitError
from orbit_pipelines.recovery import dagster_private as dp
from orbit_pipelines.recovery.announce import (
    announce_launch,
    announce_launch_failed,
    announce_recovery_run,
)
from orbit_pipelines.recovery.child_run import (
    child_run_tags,
    create_run_like,
    mark_retried,
    selected_subset,
)
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.recovery.unstarted_steps import complete_step_list
from orbit_pipelines.store.recoveries import (
    Recovery,
    attempts_used,
    claim_recovery,
    get_recovery,
    mark_launch_failed,
    mark_launched,
    take_over,
)
from orbit_pipelines.tags import (
    ATTEMPT_TAG,
    DECIDED_BY_TAG,
    INSTIGATOR_TAGS,
    PARENT_RUN_ID_TAG,
    RECOVERY_OF_TAG,
    RESUME_RETRY_TAG,
    ROOT_RUN_ID_TAG,
    ROOT_RUN_TAG,
    root_run_id_of,
)

# Any fixed UUID: recovery run ids are uuid5(this, parent run id).
_RECOVERY_NAMESPACE = uuid.UUID("5b0c1f0e-6f72-6269-7400-7265636f7672")

_REEXECUTABLE = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


@dataclass(frozen=True)
class LaunchResult:
    """What ``launch`` did: launched a run, or found the decision already taken."""

    launched: bool
    recovery: Recovery | None
    recovery_run_id: str | None
    message: str


def recovery_run_id_for(parent_run_id: str) -> str:
    """The id the recovery run of ``parent_run_id`` gets (deterministic: a second creation
    of it fails in Dagster's run storage)."""
    return str(uuid.uuid5(_RECOVERY_NAMESPACE, parent_run_id))


def launch(
    instance: DagsterInstance,
    engine: Engine,
    parent_run_id: str,
    *,
    decided_by: str,
    reason: str = "manual",
    detail: str = "",
    attempt: int | None = None,
    job_def: JobDefinition | None = None,
    settings: RecoverySettings | None = None,
    release_held: bool = False,
    launched_by: Mapping[str, str] | None = None,
) -> LaunchResult:
    """Re-execute ``parent_run_id`` from failure, unless someone already did.

    ``job_def`` is the parent's job when the caller has it loaded (the sensor does); otherwise
    it is loaded from the parent's code origin. ``release_held`` lets a person (the CLI)
    launch a run that policy held. ``launched_by``: the tags naming the sensor (and its tick)
    that launches the run, for the UI's "Launched by" (``announce.launched_by_tags``); without
    them the run shows as launched by hand, which is what a CLI launch is. The decision is
    written into the parent's and the recovery run's event logs (``announce``). Raises
    OrbitError E-4010 when the run cannot be re-executed.
    """
    settings = settings or RecoverySettings()
    parent = instance.get_run_by_id(parent_run_id)
    if parent is None:
        raise OrbitError(E4010_NOT_RECOVERABLE, f"run {parent_run_id} does not exist")
    if parent.status not in _REEXECUTABLE:
        raise OrbitError(
            E4010_NOT_RECOVERABLE,
            f"run {parent_run_id} is {parent.status.value}; only FAILURE or CANCELED runs can be "
            "re-executed from failure",
            hint="a dead STARTED run is marked failed by the recovery sensor or `orbit recover`",
        )
    if not isinstance(instance.run_coordinator, QueuedRunCoordinator):
        raise OrbitError(
            E2008_BAD_CONFIG,
            "recovery submits runs to Dagster's run queue; this instance does not use the "
            "QueuedRunCoordinator",
            hint="remove run_coordinator from dagster.yaml (queued is the default)",
        )
    root_run_id = root_run_id_of(parent)
    with engine.begin() as conn:
        number = attempt if attempt is not None else attempts_used(conn, root_run_id) + 1
        row = claim_recovery(
            conn,
            parent_run_id=parent_run_id,
            root_run_id=root_run_id,
            job_name=parent.job_name,
            attempt=number,
            reason=reason,
            detail=detail,
            decided_by=decided_by,
        )
        if row is None:
            row = take_over(
                conn,
                parent_run_id=parent_run_id,
                decided_by=decided_by,
                stale_after_s=settings.launch_takeover_s,
                from_held=release_held,
            )
        if row is None:
            existing = get_recovery(conn, parent_run_id)
    if row is None:
        status = existing.status if existing else "unknown"
        return LaunchResult(
            False,
            existing,
            existing.recovery_run_id if existing else None,
            f"run {parent_run_id} already has a recovery ({status}, decided by "
            f"{existing.decided_by if existing else '?'})",
        )
    try:
        run_id = _create_and_submit(instance, parent, row, job_def, launched_by or {})
    except Exception as error:
        with engine.begin() as conn:
            mark_launch_failed(conn, parent_run_id=parent_run_id, outcome=f"launch failed: {error}")
        announce_launch_failed(
            instance,
            parent,
            reason=row.reason,
            detail=row.detail,
            error=error,
            decided_by=row.decided_by,
        )
        raise
    with engine.begin() as conn:
        mark_launched(conn, parent_run_id=parent_run_id, recovery_run_id=run_id)
        launched = get_recovery(conn, parent_run_id)
    announce_launch(
        instance,
        parent,
        run_id,
        reason=row.reason,
        detail=row.detail,
        attempt=row.attempt,
        decided_by=row.decided_by,
    )
    return LaunchResult(True, launched, run_id, f"launched {run_id} (attempt {row.attempt})")


def _create_and_submit(
    instance: DagsterInstance,
    parent: DagsterRun,
    row: Recovery,
    job_def: JobDefinition | None,
    launched_by: Mapping[str, str],
) -> str:
    run_id = recovery_run_id_for(parent.run_id)
    existing = instance.get_run_by_id(run_id)
    if existing is None:
        _create_run(instance, parent, row, run_id, job_def, launched_by)
        existing = instance.get_run_by_id(run_id)
        mark_retried(instance, parent, run_id)
        if existing is not None:
            announce_recovery_run(
                instance,
                existing,
                parent.run_id,
                reason=row.reason,
                detail=row.detail,
                attempt=row.attempt,
                decided_by=row.decided_by,
            )
    if existing is not None and existing.status == DagsterRunStatus.NOT_STARTED:
        # QueuedRunCoordinator.submit_run only enqueues; it never uses the workspace.
        instance.submit_run(run_id, workspace=None)  # type: ignore[arg-type]
    return run_id


def _create_run(
    instance: DagsterInstance,
    parent: DagsterRun,
    row: Recovery,
    run_id: str,
    job_def: JobDefinition | None,
    launched_by: Mapping[str, str],
) -> None:
    if parent.remote_job_origin is None or parent.job_code_origin is None:
        raise OrbitError(
            E4010_NOT_RECOVERABLE,
            f"run {parent.run_id} was not launched through a code location (execute_job?); "
            "it has no origin to re-launch from",
        )
    if job_def is None:
        job_def = dp.recon_job_from_origin(parent.job_code_origin).get_definition()
    step_keys, known_state = dp.KnownExecutionState.build_resume_retry_reexecution(
        instance, parent_run=parent
    )
    # Dagster's list misses mapped steps that never started; without them the group would
    # end SUCCESS with those shards' rows never processed.
    step_keys = complete_step_list(instance, parent, step_keys)
    known_state = known_state.update_for_step_selection(step_keys)
    if not step_keys:
        raise OrbitError(
            E4010_NOT_RECOVERABLE, f"run {parent.run_id} has no unfinished step to re-execute"
        )
    subset = selected_subset(job_def, parent)
    root_run_id = root_run_id_of(parent)
    # Who launched the parent (a user's sensor or schedule) did not launch this run: the UI
    # would say so under "Launched by" and link the other instigator's tick.
    kept = child_run_tags(instance, job_def, parent)
    tags = {
        **{k: v for k, v in kept.items() if k not in INSTIGATOR_TAGS},
        **launched_by,
        PARENT_RUN_ID_TAG: parent.run_id,
        ROOT_RUN_ID_TAG: root_run_id,
        RESUME_RETRY_TAG: "true",
        ROOT_RUN_TAG: root_run_id,
        RECOVERY_OF_TAG: parent.run_id,
        ATTEMPT_TAG: str(row.attempt),
        DECIDED_BY_TAG: row.decided_by,
    }
    plan = dp.create_execution_plan(
        subset,
        parent.run_config,
        step_keys_to_execute=step_keys,
        known_state=known_state,
        tags=tags,
    )
    create_run_like(
        instance,
        subset,
        plan,
        parent,
        run_id=run_id,
        tags=tags,
        root_run_id=root_run_id,
        parent_run_id=parent.run_id,
    )
