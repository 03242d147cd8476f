"""A row step holds at most 2 connections; 16 shards at once stay inside a budget one can
compute (README, "Connections").

``shipments`` with 16 shards under the multiprocess executor, all 16 allowed at once, the
run worker being this test process (``execute_job``). Every 0.1 s the test counts the
sessions of its database in ``pg_stat_activity`` and which process holds each.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dagster import DagsterInstance, execute_job, reconstructable
from sqlalchemy import text
from sqlalchemy.engine import make_url

from orbit_examples.pipelines import example_tables
from orbit_examples.pipelines.sample_data import write_orders_csv
from orbit_pipelines_tests.budget.connection_census import Census
from orbit_pipelines_tests.budget.jobs import shipments_with_resources
from orbit_pipelines_tests.carrier.running import RunningCarrier
from orbit_pipelines_tests.pipelines.bad_input import failure_text
from orbit_pipelines_tests.pipelines.test_shipments import config, shipments_per_order

SHARDS = 16
ORDERS = 320
# Row steps: orbit's batch connection and its side connection (effects and heartbeats).
ORBIT_PER_STEP = 2
# Dagster's own storage has no pool (NullPool): a step process opens one connection at a time
# to write an event and closes it.
DAGSTER_PER_STEP = 1
# The run worker (here this test process, orchestrating the step processes): Dagster's run
# and event storage open a connection per write; 3 leaves room for writes that overlap.
RUN_WORKER = 3


def budget(steps: int) -> int:
    """The most sessions ``steps`` running row steps and their run worker may hold."""
    return steps * (ORBIT_PER_STEP + DAGSTER_PER_STEP) + RUN_WORKER


@pytest.mark.e2e
def test_sixteen_shards_hold_at_most_two_orbit_connections_each(
    dagster_home: Path, db_url: str, carrier: RunningCarrier, tmp_path: Path
) -> None:
    url = make_url(db_url)
    assert url.database is not None
    assert url.host, "budget/conftest.py gives this test a server reached over TCP"
    path = write_orders_csv(tmp_path / "orders.csv", ORDERS)
    from orbit_pipelines.store.engine import create_store_engine

    engine = create_store_engine(db_url)
    example_tables.ensure_tables(engine)
    with engine.begin() as conn:
        # Each tracking write sleeps inside its batch: the shards overlap for seconds.
        conn.execute(
            text(
                "CREATE FUNCTION public.budget_pace() RETURNS trigger LANGUAGE plpgsql"
                " AS $$ BEGIN PERFORM pg_sleep(0.1); RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER budget_pace BEFORE UPDATE OF tracking_number"
                " ON orbit_examples.orders FOR EACH ROW EXECUTE FUNCTION public.budget_pace()"
            )
        )
    engine.dispose()
    run_config = config(path, shards=SHARDS, batch_size=5)
    run_config["execution"] = {"config": {"multiprocess": {"max_concurrent": SHARDS}}}

    me = os.getpid()
    carrier_pid = carrier.proc.pid  # type: ignore[attr-defined]
    census = Census(db_url, url.database, url.port or 5432)
    with census, DagsterInstance.get() as instance:
        result = execute_job(
            reconstructable(shipments_with_resources), instance=instance, run_config=run_config
        )
    assert census.error is None, census.error
    assert result.success, failure_text(result.all_events)
    assert len(shipments_per_order(create_store_engine(db_url))) == ORDERS

    worst_step = (0, 0)
    most_steps = 0
    worst_total = (0, 0)  # (total, steps at that moment)
    for sample in census.samples:
        steps = {
            pid: counts
            for pid, counts in sample.by_pid.items()
            if pid not in (me, carrier_pid) and counts[0] > 0
        }
        for pid, (orbit, every) in steps.items():
            assert orbit <= ORBIT_PER_STEP, f"step pid {pid} held {orbit} orbit connections"
            assert every <= ORBIT_PER_STEP + DAGSTER_PER_STEP, f"step pid {pid} held {every}"
            worst_step = max(worst_step, (orbit, every))
        mine = sample.by_pid.get(me, (0, 0))[1]
        assert mine <= RUN_WORKER, f"the run worker held {mine}"
        held = sample.total - sample.by_pid.get(carrier_pid, (0, 0))[1]
        assert held <= budget(len(steps)) + sample.unattributed, (held, len(steps), sample)
        most_steps = max(most_steps, len(steps))
        worst_total = max(worst_total, (held, len(steps)))
    print(
        f"\nsamples {len(census.samples)}, most row steps at once {most_steps}, "
        f"worst step (orbit, all) {worst_step}, most sessions {worst_total[0]} "
        f"with {worst_total[1]} steps; budget at {SHARDS} steps: {budget(SHARDS)}"
    )
    # The shards really ran side by side, or the budget was never tested (11 of 16 at once
    # on a loaded 2-core machine; 4 is the floor a slower one must still reach).
    assert most_steps >= SHARDS // 4, most_steps
    assert worst_step[0] == ORBIT_PER_STEP
