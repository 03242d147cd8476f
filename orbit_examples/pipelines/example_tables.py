"""The example pipelines' own tables (schema ``orbit_examples``) and their writes.

These are the *user's* tables in the examples — what a real pipeline would load into — not
orbit's checkpoint state (schema ``orbit``). The schema is created on first use with
SQLAlchemy Core, under an advisory lock so concurrent shards do not race on CREATE TABLE.
Every write is an upsert keyed by the natural key, so a re-executed step writes the same
rows again without duplicating them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg as psycopg_dialect
from sqlalchemy.schema import CreateSchema

from orbit_examples.pipelines.orders_input import Order, ParsedOrders, RejectedRow

SCHEMA = "orbit_examples"
metadata = MetaData(schema=SCHEMA)

orders = Table(
    "orders",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("customer", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("region", Text, nullable=False),
    Column("order_date", Date, nullable=False),
    Column("items", JSONB, nullable=False),
    Column("tracking_number", Text),
    Column("source_digest", Text, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

orders_quarantine = Table(
    "orders_quarantine",
    metadata,
    # (file content, line) identifies a rejected row wherever the file is read from, so
    # loading one file twice quarantines each bad row once.
    Column("source_digest", Text, primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("source", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("order_id", Text),
    Column("quarantined_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

sales_summary = Table(
    "sales_summary",
    metadata,
    Column("region", Text, primary_key=True),
    Column("order_date", Date, primary_key=True),
    Column("items", Integer, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("revenue", Numeric(14, 2), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

_DDL_LOCK_KEY = 0x0E8A3D1E
# Postgres allows 65535 bind parameters per statement; 1000 rows x 7 columns stays well under.
_BATCH = 1000


def ensure_tables(engine: Engine) -> None:
    """Create ``orbit_examples`` and its tables if missing."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK_KEY})
        conn.execute(CreateSchema(SCHEMA, if_not_exists=True))
        metadata.create_all(conn)


def upsert_orders(conn: Connection, rows: Sequence[Order], *, source_digest: str) -> int:
    """Insert or update orders by ``order_id``; a tracking number already set is kept."""
    for start in range(0, len(rows), _BATCH):
        _upsert_order_batch(conn, rows[start : start + _BATCH], source_digest)
    return len(rows)


def _upsert_order_batch(conn: Connection, rows: Sequence[Order], source_digest: str) -> None:
    statement = insert(orders).values(
        [
            {
                "order_id": order.order_id,
                "customer": order.customer,
                "address": order.address,
                "region": order.region,
                "order_date": order.order_date,
                "items": [item.as_json() for item in order.items],
                "source_digest": source_digest,
            }
            for order in rows
        ]
    )
    excluded = statement.excluded
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["order_id"],
            set_={
                "customer": excluded.customer,
                "address": excluded.address,
                "region": excluded.region,
                "order_date": excluded.order_date,
                "items": excluded["items"],
                "source_digest": excluded.source_digest,
            },
        )
    )


def quarantine_rows(
    conn: Connection, rejects: Iterable[RejectedRow], *, source: str, source_digest: str
) -> int:
    """Store rejected rows with their code and reason (idempotent per file and line)."""
    values = [
        {
            "source_digest": source_digest,
            "line": reject.line,
            "source": source,
            "code": reject.code,
            "reason": reject.reason,
            "raw": reject.raw,
            "order_id": reject.order_id,
        }
        for reject in rejects
    ]
    if not values:
        return 0
    statement = insert(orders_quarantine).values(values)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["source_digest", "line"],
            set_={
                "code": statement.excluded.code,
                "reason": statement.excluded.reason,
                "raw": statement.excluded.raw,
                "order_id": statement.excluded.order_id,
            },
        )
    )
    return len(values)


def set_tracking_number(conn: Connection, order_id: str, tracking_number: str) -> None:
    """Write the carrier's tracking number back to the order."""
    conn.execute(
        orders.update().where(orders.c.order_id == order_id).values(tracking_number=tracking_number)
    )


def upsert_sales_summary(
    conn: Connection, totals: Iterable[tuple[str, date, int, int, Decimal]]
) -> int:
    """Replace the totals of each (region, day) given: (region, day, items, quantity, revenue)."""
    values = [
        {"region": r, "order_date": d, "items": n, "quantity": q, "revenue": v}
        for r, d, n, q, v in totals
    ]
    if not values:
        return 0
    statement = insert(sales_summary).values(values)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["region", "order_date"],
            set_={
                "items": statement.excluded["items"],
                "quantity": statement.excluded.quantity,
                "revenue": statement.excluded.revenue,
                "updated_at": func.now(),
            },
        )
    )
    return len(values)


def load_parsed(engine: Engine, parsed: ParsedOrders) -> tuple[int, int]:
    """Upsert the valid orders and quarantine the rejects in one transaction."""
    ensure_tables(engine)
    with engine.begin() as conn:
        loaded = upsert_orders(conn, parsed.orders, source_digest=parsed.digest)
        quarantined = quarantine_rows(
            conn, parsed.rejects, source=parsed.source, source_digest=parsed.digest
        )
    return loaded, quarantined


def tracking_numbers(conn: Connection) -> dict[str, str | None]:
    """order_id → tracking number (None until shipped)."""
    rows = conn.execute(select(orders.c.order_id, orders.c.tracking_number))
    return {row.order_id: row.tracking_number for row in rows}


def _compile_for_psycopg(statement: Any) -> str:
    # The executor hands transactional effects a raw psycopg connection; compiling the Core
    # statement once keeps the SQL in SQLAlchemy and the values as bound parameters.
    return str(statement.compile(dialect=psycopg_dialect()))


_SET_TRACKING_SQL = _compile_for_psycopg(
    orders.update()
    .where(orders.c.order_id == bindparam("order_id"))
    .values(tracking_number=bindparam("tracking_number"))
)


def set_tracking_number_raw(conn: Any, order_id: str, tracking_number: str) -> int:
    """``set_tracking_number`` on a psycopg connection (inside the executor's batch)."""
    cursor = conn.execute(
        _SET_TRACKING_SQL, {"order_id": order_id, "tracking_number": tracking_number}
    )
    return int(cursor.rowcount)
