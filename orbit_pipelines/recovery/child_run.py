"""Create a run that continues another one (a recovery) or starts its job over (a restart)
and keeps everything that says what the run was for.

Tags follow Dagster's own rule for a retry (``create_reexecuted_run`` with
``use_parent_run_tags``): every parent tag except the per-run ones Dagster omits on retry,
the backfill tags only while the backfill is still running. Without the partition tag a
partitioned asset's recovery failed before the asset ran ("Cannot access partition_key for a
non-partitioned run"); without the backfill tag the backfill daemon does not count the
recovery's materializations as the backfill's. Asset and asset-check selection come from the
parent too: ``create_run_for_job`` drops the check selection, so the run is created from the
plan's snapshot the way it does, with the selection kept.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import DagsterInstance, DagsterRun, JobDefinition

from orbit_pipelines.recovery import dagster_private as dp
from orbit_pipelines.tags import (
    AUTO_RETRY_RUN_ID_TAG,
    BACKFILL_TAG,
    WILL_RETRY_TAG,
    inherited_tags,
)


def backfill_running(instance: DagsterInstance, backfill_id: str | None) -> bool:
    """Whether the backfill ``backfill_id`` still accepts runs (Dagster keeps a retry in its
    backfill only then: a retry of a finished backfill's run is a run of its own)."""
    if not backfill_id:
        return False
    backfill = instance.get_backfill(backfill_id)
    return backfill is not None and backfill.status == dp.BulkActionStatus.REQUESTED


def mark_retry_pending(instance: DagsterInstance, parent: DagsterRun) -> bool:
    """Tell a running backfill that ``parent`` (failed) will be retried, so the backfill
    daemon waits for the retry instead of counting the partition failed and ending.

    Dagster's own protocol for its run retries: a FAILURE run tagged ``dagster/will_retry``
    true and not yet ``dagster/auto_retry_run_id`` is "waiting to retry"
    (``DagsterRun.is_complete_and_waiting_to_retry``), and ``backfill_runs_are_complete``
    keeps the backfill in progress while one exists. Only for runs of a running backfill;
    returns whether the tag was set. Runs are normally tagged before they can fail (a row
    step's start, the sensor seeing them in progress, a recovery's creation); this is the
    sensor's catch-up for a run that failed first (``recovery.backfill_hold``).
    """
    if not backfill_running(instance, parent.tags.get(BACKFILL_TAG)):
        return False
    instance.add_run_tags(parent.run_id, {WILL_RETRY_TAG: "true"})
    return True


def mark_retried(instance: DagsterInstance, parent: DagsterRun, retry_run_id: str) -> None:
    """Record on ``parent`` the run that retries it (the UI links the two; a backfill stops
    waiting for ``parent``'s retry and waits for the retry run itself)."""
    instance.add_run_tags(
        parent.run_id, {WILL_RETRY_TAG: "true", AUTO_RETRY_RUN_ID_TAG: retry_run_id}
    )


def child_run_tags(
    instance: DagsterInstance, job_def: JobDefinition, parent: DagsterRun
) -> dict[str, str]:
    """The job's tags, overlaid with what the child keeps of ``parent``'s tags.

    A child that stays in its parent's running backfill is created ``dagster/will_retry``
    true: should it fail too, the backfill waits for orbit's next decision about it rather
    than ending before that (``dagster_io.backfill_retry``); the sensor sets it false when it
    decides not to recover the child (``recovery.backfill_hold``)."""
    in_backfill = backfill_running(instance, parent.tags.get(BACKFILL_TAG))
    tags = {
        **{k: str(v) for k, v in (job_def.tags or {}).items()},
        **inherited_tags(
            parent.tags,
            set(dp.TAGS_TO_MAYBE_OMIT_ON_RETRY),
            keep_backfill=in_backfill,
        ),
    }
    if in_backfill:
        tags[WILL_RETRY_TAG] = "true"
    return tags


def selected_subset(job_def: JobDefinition, parent: DagsterRun) -> JobDefinition:
    """``job_def`` restricted to the ops, assets and asset checks ``parent`` selected."""
    if not (parent.op_selection or parent.asset_selection or parent.asset_check_selection):
        return job_def
    return job_def.get_subset(
        op_selection=parent.op_selection,
        asset_selection=parent.asset_selection,
        asset_check_selection=parent.asset_check_selection,
    )


def create_run_like(
    instance: DagsterInstance,
    subset: JobDefinition,
    plan: dp.ExecutionPlan,
    parent: DagsterRun,
    *,
    run_id: str | None,
    tags: Mapping[str, str],
    root_run_id: str | None,
    parent_run_id: str | None,
) -> DagsterRun:
    """Store a NOT_STARTED run of ``subset`` with ``parent``'s config, selections and code
    origins (what ``create_run_for_job`` does, plus the asset-check selection)."""
    return instance.create_run(
        job_name=subset.name,
        run_id=run_id,
        run_config=parent.run_config,
        status=None,
        tags=dict(tags),
        root_run_id=root_run_id,
        parent_run_id=parent_run_id,
        step_keys_to_execute=plan.step_keys_to_execute,
        execution_plan_snapshot=dp.snapshot_from_execution_plan(plan, subset.get_job_snapshot_id()),
        job_snapshot=subset.get_job_snapshot(),
        parent_job_snapshot=subset.get_parent_job_snapshot(),
        asset_selection=set(parent.asset_selection) if parent.asset_selection else None,
        asset_check_selection=set(parent.asset_check_selection)
        if parent.asset_check_selection
        else None,
        resolved_op_selection=set(parent.resolved_op_selection)
        if parent.resolved_op_selection
        else None,
        op_selection=list(parent.op_selection) if parent.op_selection else None,
        remote_job_origin=parent.remote_job_origin,
        job_code_origin=parent.job_code_origin,
        asset_graph=subset.asset_layer.asset_graph,
    )
