"""The example jobs under `orbit dev` with no other set-up: no carrier started by hand, no
ORBIT_CARRIER_* variables. `dagster job launch` of `shipments` (what the Launchpad does:
a run through the daemon's queue and the code location) succeeds, one shipment per order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from sqlalchemy import text

from orbit_examples.pipelines.sample_data import write_orders_csv
from orbit_pipelines.dagster_io.dagster_home import dagster_env, dagster_instance, shipped_config
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines_tests.cli.test_dev import _free_port, _job_names
from orbit_pipelines_tests.pipelines.test_shipments import config
from orbit_pipelines_tests.processes import ChildProcesses, wait_for

ORDERS = 12
ENDED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


@pytest.mark.e2e
def test_dagster_job_launch_of_shipments_succeeds_under_orbit_dev(
    db_url: str, tmp_path: Path, children: ChildProcesses
) -> None:
    port = _free_port()
    orbit_home = tmp_path / "orbit"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORBIT_CARRIER_")}
    env.pop("DAGSTER_HOME", None)
    env.update(ORBIT_POSTGRES_URL=db_url, ORBIT_HOME=str(orbit_home))
    log = tmp_path / "orbit-dev.log"
    dev = children.start(
        [sys.executable, "-m", "orbit_pipelines.cli", "dev", "--port", str(port)],
        env=env,
        log_path=log,
    )
    wait_for(
        lambda: "shipments" in _job_names(port) or dev.poll() is not None,
        timeout_s=240,
        what="the web UI to list shipments",
    )
    assert dev.poll() is None, log.read_text()[-3000:]

    home = orbit_home / "dagster_home"
    csv_path = write_orders_csv(tmp_path / "orders.csv", ORDERS)
    argv = [
        sys.executable, "-m", "dagster", "job", "launch",
        "-w", str(shipped_config("workspace.yaml")), "-j", "shipments",
        "--config-json", json.dumps(config(csv_path, shards=2)),
    ]  # fmt: skip
    launched = subprocess.run(
        argv,
        env=dagster_env(home, db_url, base=env),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]

    with dagster_instance(home, db_url) as instance:

        def ended() -> DagsterRunStatus | None:
            runs = instance.get_runs()
            if runs and runs[0].status in ENDED:
                return runs[0].status
            return None

        status = wait_for(ended, timeout_s=300, what="the shipments run to end")
        (run,) = instance.get_runs()
        assert status == DagsterRunStatus.SUCCESS, [
            e.message for e in instance.all_logs(run.run_id) if e.message
        ][-15:]
    engine = create_store_engine(db_url)
    try:
        with engine.connect() as conn:
            per_order = conn.execute(
                text("SELECT order_id, count(*) FROM carrier.shipments GROUP BY order_id")
            ).all()
    finally:
        engine.dispose()
    assert len(per_order) == ORDERS and {n for _order, n in per_order} == {1}
