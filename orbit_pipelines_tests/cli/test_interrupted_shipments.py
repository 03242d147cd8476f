"""`check-interrupted` on a real `shipments` run whose shard 0 worker SIGKILLed itself:
the right step (not the unstarted `shipping_report`), row N/M, the last completed row in
input order with its tracking number, the remaining count and E-4011 for the kill."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from dagster import DagsterInstance, execute_job, reconstructable
from sqlalchemy import Engine

from orbit_examples.pipelines import example_tables
from orbit_examples.pipelines.sample_data import order_id, write_orders_csv
from orbit_examples.pipelines.shipments import shard_of
from orbit_pipelines_tests.carrier.running import RunningCarrier
from orbit_pipelines_tests.cli.conftest import CliResult
from orbit_pipelines_tests.pipelines.conftest import carrier  # noqa: F401  (fixture)
from orbit_pipelines_tests.pipelines.jobs import shipments
from orbit_pipelines_tests.pipelines.test_shipments import config

N_ORDERS, SHARDS, BATCH, KILL_AFTER = 40, 2, 5, 12


def test_a_killed_shard_is_reported_where_it_stopped(
    dagster_home: Path,
    engine: Engine,
    carrier: RunningCarrier,  # noqa: F811
    tmp_path: Path,
    orbit_cli: Callable[..., CliResult],
) -> None:
    path = write_orders_csv(tmp_path / "orders.csv", N_ORDERS)
    run_config = config(
        path, shards=SHARDS, batch_size=BATCH, kill_after_rows=KILL_AFTER, kill_shard=0
    )
    with execute_job(reconstructable(shipments), DagsterInstance.get(), run_config=run_config) as r:
        assert not r.success
        run_id = r.run_id

    shard0 = [order_id(n) for n in range(1, N_ORDERS + 1) if shard_of(order_id(n), SHARDS) == 0]
    committed = (KILL_AFTER // BATCH) * BATCH  # the in-flight batch died with the worker
    last = shard0[committed - 1]
    with engine.connect() as conn:
        tracking = example_tables.tracking_numbers(conn)[last]
    assert tracking

    result = orbit_cli("check-interrupted", "--json")
    (group,) = json.loads(result.stdout)["interrupted"]
    assert group["latest_run_id"] == run_id
    assert group["failed_step"] == "ship_shard[shard_0]"
    assert group["position"] == {
        "step_key": "ship_shard[shard_0]",
        "row": committed,
        "of": len(shard0),
    }
    assert group["remaining_rows"] == len(shard0) - committed
    assert group["last_completed_row"]["row_key"] == last
    assert group["last_completed_row"]["result"]["tracking_number"] == tracking
    assert group["last_error"]["code"] == "E-4011"
    assert "killed by signal 9" in group["last_error"]["message"]
    assert "ChildProcessCrashException" not in result.stdout

    text = orbit_cli("check-interrupted").stdout
    assert (
        f"Job 'shipments' was interrupted at row {committed}/{len(shard0)} "
        "in step ship_shard[shard_0]"
    ) in text
    assert f"Last completed: row {last} (tracking: {tracking}" in text
    assert f"Remaining: {len(shard0) - committed} rows" in text
    assert "Last error: E-4011: the worker process of step ship_shard[shard_0] was killed" in text
    assert "[restart]" in text and "would happen again" in text
    assert "dagster._core" not in text and "Traceback" not in text
