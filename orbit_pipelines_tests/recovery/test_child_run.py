"""What a recovery or restart run keeps of its parent, against a real Dagster instance."""

from __future__ import annotations

import time
from pathlib import Path

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetKey,
    DagsterInstance,
    DagsterRun,
    Definitions,
    asset,
    asset_check,
    define_asset_job,
    job,
    op,
)
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

from orbit_pipelines.recovery.child_run import (
    backfill_running,
    child_run_tags,
    mark_retried,
    mark_retry_pending,
    selected_subset,
)
from orbit_pipelines_tests.partitions.location import defs as partition_defs


@op
def noop() -> None:
    """Nothing."""


@job(tags={"owner": "data-eng", "team": "job-default"})
def tagged_job() -> None:
    """A job with tags of its own."""
    noop()


def _add_backfill(instance: DagsterInstance, backfill_id: str) -> None:
    instance.add_backfill(
        PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id,
            asset_graph=partition_defs.get_repository_def().asset_graph,
            partition_names=["2026-11-01"],
            asset_selection=[AssetKey("daily_orders")],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
    )


def test_recovery_of_a_running_backfills_run_stays_in_the_backfill(dagster_home: Path) -> None:
    instance = DagsterInstance.get()
    _add_backfill(instance, "bfrunning")
    parent = DagsterRun(
        job_name="tagged_job",
        run_id="p1",
        tags={
            "dagster/backfill": "bfrunning",
            "dagster/partition": "2026-11-01",
            "dagster/is_resume_retry": "true",
            "team": "finance",
        },
    )
    assert backfill_running(instance, "bfrunning")
    tags = child_run_tags(instance, tagged_job, parent)
    # Job tags first, the parent's own tags win (as in Dagster's retry).
    assert tags == {
        "owner": "data-eng",
        "team": "finance",
        "dagster/backfill": "bfrunning",
        "dagster/partition": "2026-11-01",
        # Should it fail as well, the backfill waits for orbit's decision about it.
        "dagster/will_retry": "true",
    }

    backfill = instance.get_backfill("bfrunning")
    assert backfill is not None
    instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_FAILED))
    assert not backfill_running(instance, "bfrunning")
    tags = child_run_tags(instance, tagged_job, parent)
    assert "dagster/backfill" not in tags and tags["dagster/partition"] == "2026-11-01"
    assert "dagster/will_retry" not in tags
    assert not backfill_running(instance, "no-such-backfill")
    assert not backfill_running(instance, None)


@asset
def checked() -> int:
    """An asset with two checks."""
    return 1


@asset_check(asset=checked)
def positive(checked: int) -> AssetCheckResult:
    """One check."""
    return AssetCheckResult(passed=checked > 0)


@asset_check(asset=checked)
def small(checked: int) -> AssetCheckResult:
    """Another check."""
    return AssetCheckResult(passed=checked < 10)


def test_subset_keeps_the_asset_check_selection() -> None:
    assets_job = define_asset_job("checked_job", selection=[checked])
    repo = Definitions(
        assets=[checked], asset_checks=[positive, small], jobs=[assets_job]
    ).get_repository_def()
    job_def = repo.get_job("checked_job")
    only = AssetCheckKey(AssetKey("checked"), "positive")
    parent = DagsterRun(
        job_name="checked_job",
        run_id="p2",
        asset_selection=frozenset({AssetKey("checked")}),
        asset_check_selection=frozenset({only}),
    )
    subset = selected_subset(job_def, parent)
    assert subset.asset_layer.asset_graph.asset_check_keys >= {only}
    selected = subset.asset_selection_data
    assert selected is not None and selected.asset_check_selection == {only}
    assert selected_subset(tagged_job, DagsterRun(job_name="tagged_job", run_id="p3")) is tagged_job


def test_a_failed_backfill_run_waits_for_its_retry_until_the_retry_exists(
    dagster_home: Path,
) -> None:
    instance = DagsterInstance.get()
    _add_backfill(instance, "bfwait")
    run = instance.create_run_for_job(tagged_job, tags={"dagster/backfill": "bfwait"})
    instance.report_run_failed(run, "killed")
    failed = instance.get_run_by_id(run.run_id)
    assert failed is not None and not failed.is_complete_and_waiting_to_retry

    assert mark_retry_pending(instance, failed)
    waiting = instance.get_run_by_id(run.run_id)
    # What the backfill daemon reads to stay in progress (backfill_runs_are_complete).
    assert waiting is not None and waiting.is_complete_and_waiting_to_retry

    mark_retried(instance, waiting, "retry-run")
    retried = instance.get_run_by_id(run.run_id)
    assert retried is not None and not retried.is_complete_and_waiting_to_retry
    assert retried.tags["dagster/auto_retry_run_id"] == "retry-run"

    plain = instance.create_run_for_job(tagged_job)
    assert not mark_retry_pending(instance, plain)
    assert "dagster/will_retry" not in (instance.get_run_by_id(plain.run_id) or plain).tags
