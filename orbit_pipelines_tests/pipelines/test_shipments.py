"""``shipments`` against a real carrier process: faults, bad input, and a SIGKILLed shard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, ReexecutionOptions, execute_job, reconstructable
from sqlalchemy import Engine, func, select

from orbit_examples.carrier import storage as carrier_tables
from orbit_examples.pipelines import example_tables as t
from orbit_examples.pipelines.sample_data import order_id, write_orders_csv
from orbit_examples.pipelines.shipments import shard_of
from orbit_pipelines.store import tables as orbit_tables
from orbit_pipelines_tests.carrier.running import RunningCarrier
from orbit_pipelines_tests.pipelines.bad_input import (
    FILE_CASES,
    ROW_CASES,
    BadInput,
    assert_good_rows_loaded_and_bad_rows_quarantined,
    assert_rejected_file,
    corpus_file,
    failure_text,
)
from orbit_pipelines_tests.pipelines.jobs import shipments


def config(path: Path, *, shards: int = 3, **ship: Any) -> dict[str, Any]:
    return {
        "ops": {
            "load_orders": {"config": {"csv_path": str(path)}},
            "shard_orders": {"config": {"shards": shards}},
            "ship_shard": {"config": {"backoff_s": 0.05, **ship}},
        }
    }


def tracking(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return t.tracking_numbers(conn)


def shipments_per_order(engine: Engine) -> dict[str, int]:
    s = carrier_tables.shipments
    with engine.connect() as conn:
        rows = conn.execute(select(s.c.order_id, func.count()).group_by(s.c.order_id))
        return {row[0]: int(row[1]) for row in rows}


def create_requests_per_order(engine: Engine) -> dict[str, int]:
    r = carrier_tables.requests
    with engine.connect() as conn:
        rows = conn.execute(
            select(r.c.order_id, func.count())
            .where(r.c.path == "/shipments", r.c.method == "POST")
            .group_by(r.c.order_id)
        )
        return {row[0]: int(row[1]) for row in rows}


def test_ships_every_order_once_retrying_429s_and_quarantining_address_errors(
    dagster_home: Path, engine: Engine, carrier: RunningCarrier, tmp_path: Path
) -> None:
    path = write_orders_csv(tmp_path / "orders.csv", 30, bad_rows=True)
    client = carrier.client()
    client.inject_fault(order_id(3), "429", times=2)
    client.inject_fault(order_id(4), "address_error", times=5)
    client.inject_fault(order_id(5), "timeout", times=1, delay_s=1.5)

    result = shipments().execute_in_process(
        run_config=config(path, max_attempts=4),
        instance=DagsterInstance.get(),
        raise_on_error=False,
    )
    assert result.success, failure_text(result.all_events)

    numbers = tracking(engine)
    assert len(numbers) == 30
    assert numbers[order_id(4)] is None
    assert all(n and n.startswith("1Z") for k, n in numbers.items() if k != order_id(4))
    per_order = shipments_per_order(engine)
    assert order_id(4) not in per_order
    assert set(per_order.values()) == {1} and len(per_order) == 29
    # 429 twice then created; the timed-out call's shipment was replayed, not duplicated.
    assert create_requests_per_order(engine)[order_id(3)] == 3
    assert create_requests_per_order(engine)[order_id(4)] == 1  # E-3003: no retry
    with engine.connect() as conn:
        [(code, message)] = conn.execute(
            select(
                orbit_tables.row_outcomes.c.error_code, orbit_tables.row_outcomes.c.error_message
            ).where(orbit_tables.row_outcomes.c.status == "quarantined")
        ).all()
    assert code == "E-3003" and order_id(4) in message
    report = result.output_for_node("shipping_report")
    assert (report["rows_done"], report["rows_quarantined"]) == (29, 1)


@pytest.mark.parametrize("case", ROW_CASES + FILE_CASES, ids=lambda c: c.name)
def test_bad_input_ships_the_good_rows_and_quarantines_the_rest(
    case: BadInput, dagster_home: Path, engine: Engine, carrier: RunningCarrier, tmp_path: Path
) -> None:
    result = shipments().execute_in_process(
        run_config=config(corpus_file(case.name, tmp_path), shards=2),
        instance=DagsterInstance.get(),
        raise_on_error=False,
    )

    if case.file_error:
        assert not result.success
        assert_rejected_file(case, failure_text(result.all_events), engine)
        assert create_requests_per_order(engine) == {}
        return
    assert result.success, failure_text(result.all_events)
    numbers = tracking(engine)
    assert sorted(numbers) == sorted(case.good_ids)
    assert all(numbers.values())
    assert shipments_per_order(engine) == dict.fromkeys(case.good_ids, 1)
    assert_good_rows_loaded_and_bad_rows_quarantined(engine, case)


def test_a_sigkilled_shard_costs_only_its_in_flight_batch(
    dagster_home: Path, engine: Engine, carrier: RunningCarrier, tmp_path: Path
) -> None:
    n_orders, shards, batch, kill_after = 40, 2, 5, 12
    path = write_orders_csv(tmp_path / "orders.csv", n_orders)
    run_config = config(
        path, shards=shards, batch_size=batch, kill_after_rows=kill_after, kill_shard=0
    )
    instance = DagsterInstance.get()

    with execute_job(reconstructable(shipments), instance, run_config=run_config) as first:
        assert not first.success
        first_id = first.run_id
    killed = {order_id(n) for n in range(1, n_orders + 1) if shard_of(order_id(n), shards) == 0}
    before = create_requests_per_order(engine)
    # The killed shard got through `kill_after` rows; the other shards finished.
    assert len([o for o in killed if o in before]) == kill_after
    assert all(before.get(o) == 1 for o in set(map(order_id, range(1, n_orders + 1))) - killed)

    with execute_job(
        reconstructable(shipments),
        instance,
        run_config=run_config,
        reexecution_options=ReexecutionOptions.from_failure(first_id, instance),
    ) as second:
        assert second.success
        report = second.output_for_node("shipping_report")

    # The recovery skipped the killed shard's committed batches and redid only the batch
    # that was in flight; the other shards were not run again at all.
    committed = (kill_after // batch) * batch
    assert report["rows_skipped_already_done"] == committed
    assert report["rows_done"] == n_orders - committed

    per_order = shipments_per_order(engine)
    assert len(per_order) == n_orders and set(per_order.values()) == {1}
    assert all(tracking(engine).values())
    # Not one carrier call was repeated: the in-flight rows' calls had already been recorded
    # as succeeded in the effect ledger, so redoing those rows reused the recorded shipments.
    assert create_requests_per_order(engine) == dict.fromkeys(per_order, 1)
