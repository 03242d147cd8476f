"""End to end: daily-partitioned assets under a real daemon; real SIGKILLs.

One deployment for the module (database, daemon, code server); each test uses its own
partitions. ``order_totals`` is a row step with a Sum and a SumBy and one effect per row.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dagster import DagsterRun, DagsterRunStatus
from dagster._core.execution.backfill import BulkActionStatus

from orbit_pipelines.recovery.manual import restart_group
from orbit_pipelines.tags import PARTITION_TAG, RESTART_OF_TAG
from orbit_pipelines_tests.partitions.harness import PartitionsHarness, deployment
from orbit_pipelines_tests.partitions.location import (
    ROWS_PER_PARTITION,
    expected_totals,
)

pytestmark = pytest.mark.e2e

ENDED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
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
    with deployment(pg_admin_url, orbit_template, tmp_path_factory.mktemp("partitions")) as h:
        h.start_daemon()
        yield h


def _launch_partition(h: PartitionsHarness, partition: str) -> str:
    """``dagster job launch`` of the asset job for one partition, as a user would."""
    return h.launch_job("orders_daily_job", tags={PARTITION_TAG: partition, "team": "finance"})


def _group(h: PartitionsHarness, root: str) -> list[DagsterRun]:
    group = h.instance.get_run_group(root)
    return [] if group is None else list(group[1])


def _assert_partition_done_once(h: PartitionsHarness, partition: str) -> None:
    """Each asset materialized once for the partition, every row's effect once, the totals
    those of a crash-free run."""
    upstream = h.materializations("daily_orders", partition)
    totals = h.materializations("order_totals", partition)
    assert len(upstream) == 1, upstream
    assert len(totals) == 1, totals
    assert totals[0][1]["aggregations"] == expected_totals(partition), totals[0][1]
    assert h.effects(partition) == dict.fromkeys(range(ROWS_PER_PARTITION), 1)


def test_partitioned_asset_job_killed_mid_rows_is_recovered_for_its_partition(
    deployed: PartitionsHarness,
) -> None:
    h = deployed
    partition = "2026-11-02"
    h.add_fault(partition, "kill", after_rows=9)
    root = _launch_partition(h, partition)

    parent = h.wait_status(root, ENDED, timeout_s=180)
    assert parent.status == DagsterRunStatus.FAILURE, parent.status
    assert h.fault_fired_in(partition) == root, h.failures(root)
    child = h.wait_child(root, timeout_s=120)
    child = h.wait_status(child.run_id, ENDED, timeout_s=180)
    assert child.status == DagsterRunStatus.SUCCESS, h.failures(child.run_id)
    # What the run was for survives: the partition (without it the asset cannot even read
    # its partition key) and the user's tag; the run group is Dagster's.
    assert child.tags[PARTITION_TAG] == partition
    assert child.tags["team"] == "finance"
    assert child.root_run_id == root and child.parent_run_id == root
    assert child.step_keys_to_execute == ["order_totals"]
    assert {r.run_id for r in _group(h, root)} == {root, child.run_id}
    _assert_partition_done_once(h, partition)
    # The totals come from the recovery, which resumed: some rows were already done.
    (mat_run, meta) = h.materializations("order_totals", partition)[0]
    assert mat_run == child.run_id
    assert 0 < meta["rows_skipped_already_done"] < ROWS_PER_PARTITION, meta
    # The ledger and the stored outputs are keyed by the partition's run (its group's root).
    assert h.aggregation_states("order_totals")[root] == expected_totals(partition)
    assert h.output_roots("daily_orders")[root] == {root}
    assert h.output_roots("order_totals")[root] == {child.run_id}


def test_restart_of_a_partition_run_keeps_its_partition(deployed: PartitionsHarness) -> None:
    """``orbit restart`` (``restart_group``): a new run group for the same partition."""
    h = deployed
    partition = "2026-11-03"
    root = _launch_partition(h, partition)
    first = h.wait_status(root, ENDED, timeout_s=180)
    assert first.status == DagsterRunStatus.SUCCESS, h.failures(root)

    new_run_id = restart_group(h.instance, h.engine, first)
    new = h.wait_status(new_run_id, ENDED, timeout_s=180)
    assert new.status == DagsterRunStatus.SUCCESS, h.failures(new_run_id)
    assert new.tags[PARTITION_TAG] == partition
    assert new.tags["team"] == "finance"
    assert new.tags[RESTART_OF_TAG] == root
    assert new.root_run_id is None and new.parent_run_id is None
    # A new group: its own ledger, so every row ran (and its effect happened) again.
    assert h.aggregation_states("order_totals")[new_run_id] == expected_totals(partition)
    assert h.effects(partition) == dict.fromkeys(range(ROWS_PER_PARTITION), 2)
