"""Found by the chaos runner: a run worker killed while some dynamic shards have not started
yet lost those shards (fixed in ``recovery/unstarted_steps.py``).

Recovery re-executes "from failure" with Dagster's own
``KnownExecutionState.build_resume_retry_reexecution``. For a dynamic step it retries the
mapped instances that failed or were interrupted, but not the ones that never started: the
unresolved ``ship_shard[?]`` counts as "seen" as soon as one instance ran. The recovery run
then runs only the failed shard and ``shipping_report``, whose fan-in silently collects the
outputs that exist, and the run group ends SUCCESS with the unstarted shards' orders never
shipped. (The UI's "re-execute from failure" computes the same step list.) Recovery now
adds every mapped instance the group has not finished.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from sqlalchemy import Engine

from orbit_examples.pipelines import example_tables
from orbit_examples.pipelines.orders_input import read_orders
from orbit_examples.pipelines.sample_data import write_orders_csv
from orbit_pipelines.processes import ChildProcesses, wait_for
from orbit_pipelines_tests.carrier.running import start_carrier
from orbit_pipelines_tests.chaos.deployment import TERMINAL, ChaosHarness
from orbit_pipelines_tests.chaos.invariants import check_shipments, install_tracking_log

ORDERS = 90


@pytest.mark.e2e
def test_worker_killed_before_all_shards_started_ships_every_order(
    dagster_home: Path, db_url: str, engine: Engine, children: ChildProcesses, tmp_path: Path
) -> None:
    example_tables.ensure_tables(engine)
    harness = ChaosHarness(
        home=dagster_home, db_url=db_url, engine=engine, children=children, tmp=tmp_path
    )
    harness.carrier = start_carrier(children, db_url, tmp_path / "carrier")
    install_tracking_log(engine)
    harness.start_daemon()
    csv = write_orders_csv(tmp_path / "orders.csv", ORDERS, seed=5)
    orders = [o.as_json() for o in read_orders(csv).orders]
    root = str(uuid.uuid4())
    harness.launch_job(
        "shipments",
        {
            # One step at a time: shards 1 and 2 wait while shard 0 ships.
            "execution": {"config": {"multiprocess": {"max_concurrent": 1}}},
            "ops": {
                "load_orders": {"config": {"csv_path": str(csv)}},
                "shard_orders": {"config": {"shards": 3}},
                "ship_shard": {"config": {"batch_size": 5}},
            },
        },
        root,
    )
    harness.wait_rows(root, 5, step="ship_shard[shard_0]", timeout_s=180)
    (worker,) = harness.run_worker_pids()
    os.kill(worker, signal.SIGKILL)

    def group_succeeded() -> bool:
        runs = harness.group_runs(root)
        return any(r.status == DagsterRunStatus.SUCCESS for r in runs) and all(
            r.status in TERMINAL for r in runs
        )

    wait_for(group_succeeded, timeout_s=300, what="the run group to succeed")
    with engine.connect() as conn:
        verdict = check_shipments(conn, root, orders)
    assert (verdict.lost, verdict.duplicated) == (0, 0), verdict.problems[:5]
