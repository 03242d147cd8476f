"""End to end: an asset backfill of 5 daily partitions under a real daemon, 2 of them
SIGKILLed mid-step and 1 failing once with a retryable E-3001: every partition is
materialized once, each row's effect happens once, and the backfill ends COMPLETED_SUCCESS.

Launched through Dagster's backfill machinery (``instance.add_backfill`` with the asset
backfill the UI's "Materialize" dialog creates); the backfill daemon submits the runs.
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
from orbit_pipelines_tests.partitions.location import ROWS_PER_PARTITION, defs, expected_totals
from orbit_pipelines_tests.processes import wait_for

pytestmark = pytest.mark.e2e

BACKFILL_ENDED = (
    BulkActionStatus.COMPLETED,
    BulkActionStatus.COMPLETED_SUCCESS,
    BulkActionStatus.COMPLETED_FAILED,
    BulkActionStatus.FAILED,
    BulkActionStatus.CANCELED,
)


@pytest.fixture(scope="module")
def deployed(
    pg_admin_url: str, orbit_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PartitionsHarness]:
    """The module's deployment, daemon running."""
    with deployment(pg_admin_url, orbit_template, tmp_path_factory.mktemp("backfill")) as h:
        h.start_daemon()
        yield h


def _assert_partition_done_once(h: PartitionsHarness, partition: str) -> None:
    upstream = h.materializations("daily_orders", partition)
    totals = h.materializations("order_totals", partition)
    assert len(upstream) == 1, upstream
    assert len(totals) == 1, totals
    assert totals[0][1]["aggregations"] == expected_totals(partition), totals[0][1]
    assert h.effects(partition) == dict.fromkeys(range(ROWS_PER_PARTITION), 1)


BACKFILL_PARTITIONS = ["2026-11-10", "2026-11-11", "2026-11-12", "2026-11-13", "2026-11-14"]


def test_backfill_with_killed_and_failing_partitions_completes(
    deployed: PartitionsHarness,
) -> None:
    h = deployed
    killed = BACKFILL_PARTITIONS[1], BACKFILL_PARTITIONS[3]
    failing = BACKFILL_PARTITIONS[2]
    for partition in killed:
        h.add_fault(partition, "kill", after_rows=7)
    h.add_fault(failing, "fail", after_rows=5)

    backfill_id = f"orbit{uuid.uuid4().hex[:8]}"
    asset_graph = defs.get_repository_def().asset_graph
    h.instance.add_backfill(
        PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id,
            asset_graph=asset_graph,
            partition_names=BACKFILL_PARTITIONS,
            asset_selection=[AssetKey("daily_orders"), AssetKey("order_totals")],
            backfill_timestamp=time.time(),
            tags={"team": "finance"},
            dynamic_partitions_store=h.instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
    )

    def ended() -> PartitionBackfill | None:
        backfill = h.instance.get_backfill(backfill_id)
        return backfill if backfill is not None and backfill.status in BACKFILL_ENDED else None

    backfill = wait_for(ended, timeout_s=420, interval_s=1, what=f"backfill {backfill_id} ends")
    assert isinstance(backfill, PartitionBackfill)
    runs = list(h.instance.get_runs(RunsFilter(tags={BACKFILL_TAG: backfill_id})))
    summary = sorted((r.tags.get(PARTITION_TAG), r.status.value, r.parent_run_id) for r in runs)
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, (backfill.status, summary)
    for partition in BACKFILL_PARTITIONS:
        _assert_partition_done_once(h, partition)
    # Each faulty partition: its first run failed, one recovery (in the backfill) succeeded.
    for partition in (*killed, failing):
        mine = [r for r in runs if r.tags.get(PARTITION_TAG) == partition]
        assert sorted(r.status.value for r in mine) == ["FAILURE", "SUCCESS"], summary
        first = h.fault_fired_in(partition)
        assert first is not None
        recovery = next(r for r in mine if r.status == DagsterRunStatus.SUCCESS)
        assert recovery.parent_run_id == first and recovery.root_run_id == first
        assert recovery.tags["team"] == "finance"
    # Each partition's first run is its own run group's root: the ledger and the stored
    # outputs are keyed per partition, never shared between partitions of one backfill.
    roots = {r.tags[PARTITION_TAG]: r.root_run_id or r.run_id for r in runs}
    states = h.aggregation_states("order_totals")
    for partition, root in roots.items():
        assert states[root] == expected_totals(partition), (partition, states)
    upstream_roots = h.output_roots("daily_orders")
    assert set(roots.values()) <= set(upstream_roots), upstream_roots
    for partition in set(BACKFILL_PARTITIONS) - {*killed, failing}:
        mine = [r for r in runs if r.tags.get(PARTITION_TAG) == partition]
        assert [r.status for r in mine] == [DagsterRunStatus.SUCCESS], summary
