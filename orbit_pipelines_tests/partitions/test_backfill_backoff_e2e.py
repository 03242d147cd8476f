"""Finding, pinned (xfail): a backfill run that fails while nothing else of the
backfill is in progress ends the backfill COMPLETED_FAILED before orbit's recovery exists,
although the recovery then succeeds and materializes the partition.

Why (Dagster 1.13, ``_core/execution/asset_backfill.py``): the backfill daemon (every 30 s)
ends a backfill once every targeted partition is materialized or failed and
``backfill_runs_are_complete``: no run of the backfill in progress and none "waiting to
retry" (FAILURE, ``dagster/will_retry`` true, no ``dagster/auto_retry_run_id``). Only
Dagster's own run retries set ``dagster/will_retry``, when the failure is stored; orbit's
recovery run is created by the sensor one tick later at best (15 s by default; for a second
attempt the backoff comes on top), so nothing holds the backfill open in between. Seen
here: the run failed at :11, the backfill ended COMPLETED_FAILED at :14, the recovery was
launched at :18 and succeeded, without the backfill tag (Dagster's rule for a retry of a
finished backfill's run). Here the window is made certain (a second failure, then a 45 s
backoff before the second recovery). The 5-partition test passes because other partitions' runs are
still in progress when the faulty ones fail.

The fix needs ``dagster/will_retry`` on the run before it fails (orbit marking the runs of
a running backfill when they start, ``recovery.child_run.mark_retry_pending``) and set back
to false whenever orbit decides not to recover; ``launch`` already sets
``dagster/auto_retry_run_id`` when the recovery exists. Not done: it spans the sensor cycle
and the row step, owned elsewhere. This test turns green with it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from dagster import AssetKey, DagsterRunStatus, RunsFilter
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

from orbit_pipelines.tags import BACKFILL_TAG, PARTITION_TAG
from orbit_pipelines_tests.partitions.harness import PartitionsHarness, deployment
from orbit_pipelines_tests.partitions.location import defs
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


@pytest.mark.xfail(
    strict=False,  # timing-dependent: a pass must not turn CI red
    reason="nothing marks a backfill run as waiting for orbit's retry before the recovery "
    "run exists; see the module docstring",
)
def test_backfill_waits_for_a_recovery_in_backoff(deployed: PartitionsHarness) -> None:
    h = deployed
    partition = "2026-11-20"
    h.add_fault(partition, "fail", after_rows=3, times=2)
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

    backfill = wait_for(ended, timeout_s=300, interval_s=1, what=f"backfill {backfill_id} ends")
    assert isinstance(backfill, PartitionBackfill)
    # Whatever the backfill says, the partition is recovered in the end.
    last_failed = h.fault_fired_in(partition)
    assert last_failed is not None
    child = h.wait_child(last_failed, timeout_s=180)
    child = h.wait_status(child.run_id, (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE))
    assert child.status == DagsterRunStatus.SUCCESS, h.failures(child.run_id)
    assert len(h.materializations("order_totals", partition)) == 1
    runs = h.instance.get_runs(RunsFilter(tags={BACKFILL_TAG: backfill_id}))
    summary = sorted((r.tags.get(PARTITION_TAG), r.status.value) for r in runs)
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, (backfill.status, summary)
