"""``shipments`` under ``celery_executor`` on two Celery workers that look like two hosts.

A real daemon (its code server evaluates the recovery sensor), RabbitMQ, the real carrier.
A worker's steps write heartbeats with the worker's own host name, so on this host the
sensor cannot ask whether their pids live: a lost worker is found by heartbeat timeout
only. What must hold is read at the receivers: one shipment per order at the carrier, one
committed tracking-number write per order (a trigger logs every one).
"""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterRunStatus
from sqlalchemy import Engine, text

from orbit_examples.pipelines import example_tables
from orbit_examples.pipelines.sample_data import write_orders_csv
from orbit_examples.pipelines.shipments import shard_of
from orbit_pipelines.store.recoveries import get_recovery
from orbit_pipelines_tests.carrier.running import RunningCarrier
from orbit_pipelines_tests.celery.celery_harness import (
    CeleryHarness,
    process_ended,
    process_state,
)
from orbit_pipelines_tests.celery.location import JOB
from orbit_pipelines_tests.chaos.invariants import check_shipments, install_tracking_log
from orbit_pipelines_tests.pipelines.location_harness import ENDED
from orbit_pipelines_tests.pipelines.test_shipments import config
from orbit_pipelines_tests.processes import wait_for

WORKERS = ("worker-a", "worker-b")
SHARDS = 2
STALE = "E-4009"

# Every tracking-number write sleeps this long inside its batch transaction, so a shard
# takes seconds and a kill lands mid-shard on any machine. A test-only trigger: the job
# itself is unchanged.
PACE_DDL = (
    "CREATE OR REPLACE FUNCTION public.celery_pace() RETURNS trigger LANGUAGE plpgsql"
    " AS $$ BEGIN PERFORM pg_sleep(:seconds); RETURN NEW; END $$",
    "CREATE TRIGGER celery_pace BEFORE UPDATE OF tracking_number ON orbit_examples.orders"
    " FOR EACH ROW EXECUTE FUNCTION public.celery_pace()",
)


def prepare_receivers(engine: Engine, pace_s: float) -> None:
    """The example tables, the tracking-write log and (``pace_s`` > 0) the pacing trigger."""
    example_tables.ensure_tables(engine)
    install_tracking_log(engine)
    if pace_s > 0:
        with engine.begin() as conn:
            # plpgsql bodies take no bind parameters: the literal is a float we formatted.
            conn.execute(text(PACE_DDL[0].replace(":seconds", f"{pace_s:.3f}")))
            conn.execute(text(PACE_DDL[1]))


def read_orders(path: Path) -> list[dict[str, Any]]:
    """The orders of the CSV, in file order."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def shard_step(shard: int) -> str:
    return f"ship_shard[shard_{shard}]"


def assert_every_order_once(celery: CeleryHarness, root: str, orders: list[dict[str, Any]]) -> None:
    """At the carrier and in the orders table: nothing lost, nothing twice."""
    with celery.engine.connect() as conn:
        verdict = check_shipments(conn, root, orders)
    assert (verdict.lost, verdict.duplicated, verdict.problems) == (0, 0, []), verdict


def wait_dead_recovery(celery: CeleryHarness, root: str, host: str) -> str:
    """The root run is found dead by heartbeat timeout (naming ``host``), its run worker
    stops, one recovery is launched and succeeds; returns the recovery run's id."""
    parent = celery.wait_status(root, ENDED, timeout_s=240)
    assert parent.status == DagsterRunStatus.FAILURE, parent.status
    # The dead run's run worker waited for the lost task's result for ever (Dagster's
    # Celery executor has no timeout): orbit stops it when it marks the run dead.
    worker = celery.run_process_pid(root)
    wait_for(lambda: process_ended(worker), timeout_s=30, what=f"run worker {worker} to end")
    child = celery.wait_child(root, timeout_s=120)
    child = celery.wait_status(child.run_id, ENDED, timeout_s=240)
    assert child.status == DagsterRunStatus.SUCCESS, (child.status, celery.failures(child.run_id))
    assert [c.run_id for c in celery.children_of(root)] == [child.run_id]
    row = celery.wait_recovery(root, "succeeded")
    assert (row.reason, row.attempt, row.recovery_run_id) == ("dead", 1, child.run_id), row
    # Judged by the heartbeat's age, not by a pid: the beat came from another host.
    assert "no heartbeat for" in row.detail and host in row.detail, row.detail
    said = [entry.message or "" for entry in celery.instance.all_logs(root)]
    assert any("SIGKILLed the run's worker process" in m for m in said), said
    # FAILURE stays FAILURE: the killed worker wrote no late end event.
    ended = celery.instance.get_run_by_id(root)
    assert ended is not None and ended.status == DagsterRunStatus.FAILURE, ended
    return child.run_id


@pytest.mark.e2e
def test_worker_host_killed_mid_shard_is_recovered_on_the_other_worker(
    celery: CeleryHarness, carrier: RunningCarrier, tmp_path: Path
) -> None:
    path = write_orders_csv(tmp_path / "orders.csv", 120)
    orders = read_orders(path)
    prepare_receivers(celery.engine, pace_s=0.1)
    for name in WORKERS:
        celery.start_worker(name)
    celery.start_daemon()
    root = celery.launch_job(JOB, config(path, shards=SHARDS, batch_size=5))

    # Some shard is mid-way on some worker: that worker's host dies.
    def mid_shard() -> tuple[str, str, int] | None:
        for step, (host, pid, rows) in celery.beats(root).items():
            if step.startswith("ship_shard") and rows >= 15:
                return step, host, pid
        return None

    found = wait_for(mid_shard, timeout_s=240, what="a shard 15 rows in")
    assert isinstance(found, tuple)
    step, host, pid = found
    assert host in WORKERS, f"the heartbeat names {host!r}, not the worker's own host name"
    assert celery.worker_of_pid(pid) == host, "the step ran in another worker's processes"
    celery.kill_worker(host)
    killed_rows = celery.beats(root)[step][2]
    shard_orders = sum(1 for o in orders if shard_step(shard_of(o["order_id"], SHARDS)) == step)
    assert killed_rows < shard_orders, "the shard finished before the kill: nothing was tested"

    child = wait_dead_recovery(celery, root, host)
    (other,) = (w for w in WORKERS if w != host)
    assert celery.beats(child)[step][0] == other, celery.beats(child)
    assert celery.steps_started(child) == sorted([step, "shipping_report"])
    assert_every_order_once(celery, root, orders)
    report = celery.output_metadata(child, "shipping_report")
    assert report["rows_done"] + report["rows_skipped_already_done"] == len(orders), report


@pytest.mark.e2e
def test_frozen_step_woken_after_its_recovery_commits_nothing(
    celery: CeleryHarness, carrier: RunningCarrier, tmp_path: Path
) -> None:
    path = write_orders_csv(tmp_path / "orders.csv", 60)
    orders = read_orders(path)
    prepare_receivers(celery.engine, pace_s=0.05)
    for name in WORKERS:
        # Late acks: the worker whose one pool process is frozen takes no other task, so the
        # recovery's task goes to the worker that can run it.
        celery.start_worker(name, acks_late=True)
    celery.start_daemon()
    # Freeze the step while it waits for the carrier's answer on one order (batch size 1:
    # every earlier row is committed, so the frozen process holds no row lock the recovery
    # needs; it holds a shipment request in flight and its own claim on the step).
    step = shard_step(0)
    target = [o["order_id"] for o in orders if shard_of(o["order_id"], SHARDS) == 0][8]
    carrier.client().inject_fault(target, "timeout", times=1, delay_s=3)
    root = celery.launch_job(JOB, config(path, shards=SHARDS, batch_size=1))

    def requested() -> bool:
        with celery.engine.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT count(*) FROM carrier.requests WHERE order_id = :o"),
                    {"o": target},
                ).scalar_one()
            )

    def in_flight() -> bool:
        return requested() and step in celery.beats(root)

    wait_for(in_flight, timeout_s=240, interval_s=0.1, what=f"the carrier call for {target}")
    host, pid, _rows = celery.beats(root)[step]
    assert host in WORKERS and celery.worker_of_pid(pid) == host
    assert pid != celery.workers[host].pid, "the step should run in a pool process"
    os.kill(pid, signal.SIGSTOP)
    try:
        child = wait_dead_recovery(celery, root, host)
        assert process_state(pid) == "T", "the frozen step woke before its recovery ended"
        (other,) = (w for w in WORKERS if w != host)
        assert celery.beats(child)[step][0] == other
        assert_every_order_once(celery, root, orders)
    finally:
        os.kill(pid, signal.SIGCONT)

    # Woken, the stale execution goes on with the order it was shipping: the fence refuses
    # what it tries to commit and it stops with E-4009.
    def stale_stopped() -> bool:
        return celery.steps_failed(root) == [step]

    wait_for(stale_stopped, timeout_s=120, what="the woken step to stop")
    assert any(STALE in message for message in celery.failures(root)), celery.failures(root)
    assert_every_order_once(celery, root, orders)
    with celery.engine.connect() as conn:
        row = get_recovery(conn, root)
        committed_by = conn.execute(
            text(
                "SELECT run_id FROM orbit.row_outcomes"
                " WHERE root_run_id = :g AND step_key = :s AND row_key = :k"
            ),
            {"g": root, "s": step, "k": target},
        ).scalar_one()
    assert row is not None and row.status == "succeeded"
    assert committed_by == child, "the order in flight at the freeze belongs to the recovery"
