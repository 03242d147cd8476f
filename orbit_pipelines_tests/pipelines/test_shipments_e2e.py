"""``shipments`` end to end: one shard SIGKILLed under a real daemon, recovered by the real
recovery sensor; measured at the real carrier's tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from orbit_examples.carrier import storage as carrier_tables
from orbit_examples.pipelines.sample_data import order_id, write_orders_csv
from orbit_examples.pipelines.shipments import shard_of
from orbit_pipelines_tests.carrier.running import RunningCarrier
from orbit_pipelines_tests.pipelines.location_harness import CRASH, LocationHarness
from orbit_pipelines_tests.pipelines.test_shipments import (
    config,
    create_requests_per_order,
    shipments_per_order,
    tracking,
)

ORDERS, SHARDS, BATCH, KILL_AFTER = 40, 2, 5, 12
KILLED, OTHER = "ship_shard[shard_0]", "ship_shard[shard_1]"


@pytest.mark.e2e
def test_killed_shard_is_recovered_by_the_sensor_and_every_order_ships_once(
    location: LocationHarness, carrier: RunningCarrier, tmp_path: Path
) -> None:
    path = write_orders_csv(tmp_path / "orders.csv", ORDERS)
    all_ids = [order_id(n) for n in range(1, ORDERS + 1)]
    assert {shard_of(o, SHARDS) for o in all_ids} == {0, 1}
    location.start_daemon()  # after the carrier fixture: the daemon's env carries its URL
    run_config = config(
        path, shards=SHARDS, batch_size=BATCH, kill_after_rows=KILL_AFTER, kill_shard=0
    )
    root = location.launch_job("shipments", run_config)

    child = location.recovered(root)
    print(f"\n{location.timeline(root, child.run_id)}")

    # The first run: shard 0 died (the injected SIGKILL), shard 1 finished.
    assert location.steps_failed(root) == [KILLED]
    assert location.failures(root) == [CRASH]
    assert location.steps_started(root) == sorted(["load_orders", "shard_orders", KILLED, OTHER])
    # The recovery re-ran the killed shard and the report only: not the load, not the
    # sharding, not the shard that had finished.
    assert sorted(child.step_keys_to_execute or []) == [KILLED, "shipping_report"]
    assert location.steps_started(child.run_id) == [KILLED, "shipping_report"]

    # Rows: the killed shard's committed batches were skipped; only its in-flight batch
    # was redone.
    committed = location.rows_committed(root, KILLED)
    assert committed[root] == (KILL_AFTER // BATCH) * BATCH
    assert KILL_AFTER - committed[root] <= BATCH
    shard_rows = sum(1 for o in all_ids if shard_of(o, SHARDS) == 0)
    assert committed[child.run_id] == shard_rows - committed[root]
    assert location.rows_recommitted(root, KILLED) == 0
    assert location.rows_committed(root, OTHER) == {root: ORDERS - shard_rows}
    rerun = location.output_metadata(child.run_id, KILLED)
    assert rerun["rows_skipped_already_done"] == committed[root]
    assert rerun["rows_done"] == shard_rows - committed[root]

    # At the carrier: one shipment per order, one create request per order (the in-flight
    # rows' calls were replayed from the effect ledger), and each order carries its
    # shipment's tracking number.
    assert shipments_per_order(location.engine) == dict.fromkeys(all_ids, 1)
    assert create_requests_per_order(location.engine) == dict.fromkeys(all_ids, 1)
    s = carrier_tables.shipments
    with location.engine.connect() as conn:
        rows = conn.execute(select(s.c.order_id, s.c.tracking_number))
        carrier_numbers = {row.order_id: row.tracking_number for row in rows}
    assert tracking(location.engine) == carrier_numbers
    report = location.output_metadata(child.run_id, "shipping_report")
    assert report["rows_done"] + report["rows_skipped_already_done"] == ORDERS, report
