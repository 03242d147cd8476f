"""A backfill waits for orbit's retries, and ends when orbit will not retry.

The finding this pinned (fixed): a backfill run that failed while nothing else of the
backfill was in progress ended the backfill COMPLETED_FAILED before orbit's recovery existed,
although the recovery then succeeded and materialized the partition (outside the backfill:
Dagster's rule for a retry of a finished backfill's run).

Why (Dagster 1.13, ``_core/execution/asset_backfill.py``): the backfill daemon (every 30 s)
ends a backfill once every targeted partition is materialized or failed and
``backfill_runs_are_complete``: no run of the backfill in progress and none "waiting to
retry" (FAILURE, ``dagster/will_retry`` true, no ``dagster/auto_retry_run_id``). Only
Dagster's own run retries (off under orbit) set ``dagster/will_retry``; orbit's recovery run
is created by the sensor one tick later at best, and for a second attempt the backoff comes
on top, so nothing held the backfill open in between.

The fix (``dagster_io/backfill_retry.py``, ``recovery/backfill_hold.py``): a run of a running
backfill says ``will_retry=true`` before it can fail (a row step tags it at its start, a
recovery run is created with it, the sensor tags runs it sees in progress), ``launch`` sets
``auto_retry_run_id``, and the sensor sets ``will_retry=false`` whenever it decides not to
recover, so that the backfill then ends COMPLETED_FAILED instead of waiting forever.

Here the window is made certain: the partition fails twice, and the second recovery waits a
backoff of 45 s (longer than the backfill daemon's tick). The 5-partition test in
``test_backfill_e2e.py`` passed without the fix because other partitions' runs were still in
progress when the faulty ones failed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from dagster import AssetKey, DagsterRunStatus, RunsFilter
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

from orbit_pipelines.store.recoveries import get_recovery
from orbit_pipelines.tags import BACKFILL_TAG, PARTITION_TAG, WILL_RETRY_TAG
from orbit_pipelines_tests.partitions.harness import PartitionsHarness, deployment
from orbit_pipelines_tests.partitions.location import ROWS_PER_PARTITION, defs
from orbit_pipelines_tests.processes import wait_for

pytestmark = pytest.mark.e2e

# The window made certain: the partition fails twice, and the second recovery waits a
# backoff of 45 s (+-20 %), longer than the backfill daemon's 30 s tick.
SLOW_BACKOFF = {"ORBIT_RECOVERY_INTERVAL_S": "2", "ORBIT_RECOVERY_BACKOFF_BASE_S": "45"}
ENDED = (
    BulkActionStatus.COMPLETED_SUCCESS,
    BulkActionStatus.COMPLETED_FAILED,
    BulkActionStatus.FAILED,
    BulkActionStatus.CANCELED,
)


@pytest.fixture(scope="module")
def deployed(
    pg_admin_url: str, orbit_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PartitionsHarness]:
    """The module's deployment with a backoff longer than the backfill daemon's tick."""
    tmp = tmp_path_factory.mktemp("backoff")
    with deployment(pg_admin_url, orbit_template, tmp, settings_env=SLOW_BACKOFF) as h:
        h.start_daemon()
        yield h


def _run_backfill(h: PartitionsHarness, partition: str) -> tuple[str, PartitionBackfill]:
    """Backfill both assets for ``partition`` (what the UI's "Materialize" dialog creates);
    wait until the backfill ends."""
    backfill_id = f"orbit{uuid.uuid4().hex[:8]}"
    h.instance.add_backfill(
        PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id,
            asset_graph=defs.get_repository_def().asset_graph,
            partition_names=[partition],
            asset_selection=[AssetKey("daily_orders"), AssetKey("order_totals")],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=h.instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
    )

    def ended() -> PartitionBackfill | None:
        backfill = h.instance.get_backfill(backfill_id)
        return backfill if backfill is not None and backfill.status in ENDED else None

    backfill = wait_for(ended, timeout_s=420, interval_s=1, what=f"backfill {backfill_id} ends")
    assert isinstance(backfill, PartitionBackfill)
    return backfill_id, backfill


def _summary(h: PartitionsHarness, backfill_id: str) -> list[tuple[str | None, str, str]]:
    runs = h.instance.get_runs(RunsFilter(tags={BACKFILL_TAG: backfill_id}))
    return sorted(
        (r.tags.get(PARTITION_TAG), r.status.value, r.tags.get(WILL_RETRY_TAG, "-")) for r in runs
    )


def test_backfill_waits_for_a_recovery_in_backoff(deployed: PartitionsHarness) -> None:
    h = deployed
    partition = "2026-11-20"
    h.add_fault(partition, "fail", after_rows=3, times=2)
    backfill_id, backfill = _run_backfill(h, partition)
    summary = _summary(h, backfill_id)
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, (backfill.status, summary)
    # The partition's first run, its recovery (failed, then waited 45 s) and the second
    # recovery, all in the backfill; the second recovery materialized the partition.
    assert [status for _, status, _ in summary] == ["FAILURE", "FAILURE", "SUCCESS"], summary
    last_failed = h.fault_fired_in(partition)
    assert last_failed is not None
    child = h.wait_child(last_failed, timeout_s=10)
    assert child.status == DagsterRunStatus.SUCCESS, h.failures(child.run_id)
    assert child.tags[BACKFILL_TAG] == backfill_id
    ((mat_run, _meta),) = h.materializations("order_totals", partition)
    assert mat_run == child.run_id
    assert h.effects(partition) == dict.fromkeys(range(ROWS_PER_PARTITION), 1)


def test_backfill_ends_failed_when_orbit_will_not_recover(deployed: PartitionsHarness) -> None:
    """A non-retryable error (E-5001): orbit holds the run for a person, the run stops
    saying it will be retried, and the backfill ends COMPLETED_FAILED instead of waiting."""
    h = deployed
    partition = "2026-11-21"
    h.add_fault(partition, "deny", after_rows=3)
    backfill_id, backfill = _run_backfill(h, partition)
    summary = _summary(h, backfill_id)
    assert backfill.status == BulkActionStatus.COMPLETED_FAILED, (backfill.status, summary)
    failed = h.fault_fired_in(partition)
    assert failed is not None
    run = h.instance.get_run_by_id(failed)
    assert run is not None and run.status == DagsterRunStatus.FAILURE
    # Tagged while it ran (the row step's start), untagged once orbit held it.
    assert run.tags[WILL_RETRY_TAG] == "false", run.tags
    assert h.children_of(failed) == []
    with h.engine.connect() as conn:
        held = get_recovery(conn, failed)
    assert held is not None and held.status == "held", held
    assert "E-5001" in held.detail
    assert h.materializations("order_totals", partition) == []
