"""Loading a parsed orders file: valid rows upserted, rejects quarantined, twice is once."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, select

from orbit_examples.pipelines import example_tables as t
from orbit_examples.pipelines.orders_input import read_orders

CORPUS = Path(__file__).parent / "corpus"


def test_load_upserts_orders_and_quarantines_rejects_idempotently(engine: Engine) -> None:
    parsed = read_orders(CORPUS / "non_utf8.csv")

    assert t.load_parsed(engine, parsed) == (2, 1)
    assert t.load_parsed(engine, parsed) == (2, 1)

    with engine.connect() as conn:
        orders = conn.execute(select(t.orders).order_by(t.orders.c.order_id)).all()
        quarantined = conn.execute(select(t.orders_quarantine)).all()
    assert [o.order_id for o in orders] == ["O-1", "O-3"]
    assert orders[0].items == [{"sku": "A-100", "quantity": 1, "unit_price": "9.99"}]
    [reject] = quarantined
    assert (reject.line, reject.code, reject.order_id) == (3, "E-1006", "O-2")
    assert reject.source_digest == parsed.digest and "Jos\\xe9" in reject.raw


def test_reloading_an_order_keeps_its_tracking_number(engine: Engine, tmp_path: Path) -> None:
    parsed = read_orders(CORPUS / "duplicate_order_id.csv")
    t.load_parsed(engine, parsed)
    with engine.begin() as conn:
        t.set_tracking_number(conn, "O-2", "1ZABCDEF0123456789")

    t.load_parsed(engine, parsed)

    with engine.connect() as conn:
        assert t.tracking_numbers(conn) == {"O-1": None, "O-2": "1ZABCDEF0123456789", "O-3": None}


def test_upsert_sales_summary_replaces_totals(engine: Engine) -> None:
    from datetime import date
    from decimal import Decimal

    t.ensure_tables(engine)
    day = date(2026, 11, 1)
    with engine.begin() as conn:
        t.upsert_sales_summary(conn, [("EU", day, 1, 2, Decimal("3.50"))])
        t.upsert_sales_summary(conn, [("EU", day, 2, 5, Decimal("10.25"))])
    with engine.connect() as conn:
        [row] = conn.execute(select(t.sales_summary)).all()
    assert (row.items, row.quantity, row.revenue) == (2, 5, Decimal("10.25"))
