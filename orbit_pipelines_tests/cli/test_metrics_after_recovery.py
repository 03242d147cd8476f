"""`orbit metrics --json` and `orbit doctor --json` after a real recovery: a `shipments`
shard SIGKILLed under a real daemon, re-executed by the real recovery sensor."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from orbit_examples.pipelines.sample_data import order_id, write_orders_csv
from orbit_examples.pipelines.shipments import shard_of
from orbit_pipelines_tests.carrier.running import RunningCarrier
from orbit_pipelines_tests.cli.conftest import CliResult
from orbit_pipelines_tests.pipelines.conftest import carrier, location  # noqa: F401
from orbit_pipelines_tests.pipelines.location_harness import LocationHarness
from orbit_pipelines_tests.pipelines.test_shipments import config

ORDERS, SHARDS, BATCH, KILL_AFTER = 40, 2, 5, 12


@pytest.mark.e2e
def test_metrics_and_doctor_after_a_real_recovery(
    location: LocationHarness,  # noqa: F811
    carrier: RunningCarrier,  # noqa: F811
    tmp_path: Path,
    orbit_cli: Callable[..., CliResult],
) -> None:
    path = write_orders_csv(tmp_path / "orders.csv", ORDERS)
    location.start_daemon()
    run_config = config(
        path, shards=SHARDS, batch_size=BATCH, kill_after_rows=KILL_AFTER, kill_shard=0
    )
    root = location.launch_job("shipments", run_config)
    child = location.recovered(root)

    result = orbit_cli("metrics", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["detected_total"] == 1
    assert metrics["recovered"] == 1 and metrics["held"] == 0
    assert metrics["success_rate"] == 1.0
    # The recovery re-ran the killed shard and the report.
    assert metrics["steps_reexecuted_per_recovery"] == len(child.step_keys_to_execute or [])
    shard_rows = sum(1 for n in range(1, ORDERS + 1) if shard_of(order_id(n), SHARDS) == 0)
    committed = (KILL_AFTER // BATCH) * BATCH
    assert metrics["rows_reexecuted_per_recovery"] == shard_rows - committed
    assert metrics["kill_to_launch_s"]["n"] == 1
    assert 0 <= metrics["kill_to_launch_s"]["p50"] < 120
    assert metrics["kill_to_success_s"]["n"] == 1
    assert metrics["kill_to_success_s"]["p50"] >= metrics["kill_to_launch_s"]["p50"]

    prom = orbit_cli("metrics", "--prometheus").stdout
    assert "orbit_recoveries_succeeded 1" in prom
    assert 'orbit_recovery_kill_to_launch_seconds{quantile="0.5"}' in prom

    doctor = json.loads(orbit_cli("doctor", "--json").stdout)
    found = {p["check"] for p in doctor["problems"]}
    # The daemon runs, the sensor ticks, the ledgers agree with Dagster. (Connection
    # headroom depends on the shared test server, not on this deployment.)
    assert found <= {"connection_headroom"}, doctor["problems"]
    assert doctor["facts"]["sensor_daemon_heartbeat_age_s"] is not None
