"""``orders_import`` end to end: the load step SIGKILLed mid-transaction under a real daemon,
recovered by the real recovery sensor from the checkpointed extract/transform outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from orbit_examples.pipelines import example_tables as t
from orbit_examples.pipelines.orders_input import read_orders
from orbit_examples.pipelines.sample_data import write_orders_csv
from orbit_pipelines_tests.pipelines.location_harness import CRASH, LocationHarness

ORDERS = 60
KILL_AFTER = 25


@pytest.mark.e2e
def test_load_killed_mid_transaction_is_recovered_from_the_checkpointed_frames(
    location: LocationHarness, tmp_path: Path
) -> None:
    path = write_orders_csv(tmp_path / "orders.csv", ORDERS, bad_rows=True)
    expected = read_orders(path)
    location.start_daemon()
    run_config = {
        "ops": {
            "extract_orders": {"config": {"csv_path": str(path)}},
            "load_orders_table": {"config": {"csv_path": str(path), "kill_after_rows": KILL_AFTER}},
        }
    }
    root = location.launch_job("orders_import", run_config)

    child = location.recovered(root)
    print(f"\n{location.timeline(root, child.run_id)}")

    # The first run got through extract and transform; its load died (the injected SIGKILL).
    assert location.steps_started(root) == [
        "extract_orders",
        "load_orders_table",
        "transform_orders",
    ]
    assert location.steps_failed(root) == ["load_orders_table"]
    assert location.failures(root) == [CRASH], location.failures(root)
    # The recovery ran the load only, on the frames the checkpoint IO manager kept.
    assert child.step_keys_to_execute == ["load_orders_table"]
    assert location.steps_started(child.run_id) == ["load_orders_table"]
    loaded_from = sorted(
        m.split(" (", 1)[0] for m in location.messages(child.run_id) if m.startswith("loaded '")
    )
    assert loaded_from == [
        f"loaded '{name}' of step 'transform_orders' from run {root}"
        for name in ("quarantined", "valid")
    ]
    stored = location.stored_outputs(root)
    assert [(r, s, o) for r, s, o, _ in stored if s != "load_orders_table"] == [
        (root, "extract_orders", "result"),
        (root, "transform_orders", "quarantined"),
        (root, "transform_orders", "valid"),
    ]
    assert location.output_metadata(child.run_id, "load_orders_table")["orders_upserted"] == ORDERS

    # Every valid order once, every bad row quarantined once with its code and reason.
    with location.engine.connect() as conn:
        ids = conn.execute(select(t.orders.c.order_id)).scalars().all()
        quarantine = conn.execute(
            select(
                t.orders_quarantine.c.line, t.orders_quarantine.c.code, t.orders_quarantine.c.reason
            )
        ).all()
        digests = conn.execute(select(func.count(func.distinct(t.orders.c.source_digest)))).scalar()
    assert len(ids) == ORDERS == len(set(ids))
    assert sorted(ids) == sorted(o.order_id for o in expected.orders)
    assert sorted((r.line, r.code) for r in quarantine) == sorted(
        (r.line, r.code) for r in expected.rejects
    )
    assert all(r.reason for r in quarantine)
    assert digests == 1
