"""Finding, pinned (xfail strict): a backfill run that fails with a retryable code while the
recovery waits out its backoff is counted failed, and the backfill ends COMPLETED_FAILED
before the recovery runs.

Why (Dagster 1.13, ``_core/execution/asset_backfill.py``): the backfill daemon (every 30 s)
ends a backfill once every targeted partition is materialized or failed and
``backfill_runs_are_complete``: no run of the backfill in progress and none "waiting to
retry" (FAILURE, ``dagster/will_retry`` true, no ``dagster/auto_retry_run_id``). Only
Dagster's own run retries set ``dagster/will_retry``, at the failure; orbit's recovery run
does not exist yet during the backoff (30 s by default), so nothing holds the backfill open.
A recovery launched after that carries no backfill tag (Dagster's rule for a finished
backfill), so the partition ends materialized while the backfill says it failed.

The fix: the recovery cycle calls ``recovery.child_run.mark_retry_pending`` on the failed
run when it decides to wait (``launch`` already sets ``dagster/auto_retry_run_id`` when the
recovery exists). That is in ``recovery/cycle.py``; this test turns green with it.
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

# Longer than the backfill daemon's 30 s tick, so its tick surely falls in the backoff.
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
    strict=True,
    reason="the recovery cycle does not mark a failed backfill run as waiting to retry "
    "during its backoff; see the module docstring",
)
def test_backfill_waits_for_a_recovery_in_backoff(deployed: PartitionsHarness) -> None:
    h = deployed
    partition = "2026-11-20"
    h.add_fault(partition, "fail", after_rows=3)
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
    first = h.fault_fired_in(partition)
    assert first is not None
    child = h.wait_child(first, timeout_s=180)
    child = h.wait_status(child.run_id, (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE))
    assert child.status == DagsterRunStatus.SUCCESS, h.failures(child.run_id)
    assert len(h.materializations("order_totals", partition)) == 1
    runs = h.instance.get_runs(RunsFilter(tags={BACKFILL_TAG: backfill_id}))
    summary = sorted((r.tags.get(PARTITION_TAG), r.status.value) for r in runs)
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, (backfill.status, summary)
