"""The local carrier's Postgres tables (schema ``carrier``) and the queries the server runs.

Every request the carrier receives is a row in ``carrier.requests``; every shipment it creates
is a row in ``carrier.shipments`` whose ``idempotency_key`` is unique, so the database (not a
Python ``if``) guarantees one shipment per key even when two requests race.
``carrier.faults`` holds the misbehaviour a test or demo asked for, per order.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.schema import CreateSchema

SCHEMA = "carrier"
metadata = MetaData(schema=SCHEMA)

requests = Table(
    "requests",
    metadata,
    Column("request_id", BigInteger, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("method", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("order_id", Text),
    Column("idempotency_key", Text),
    Column("status", Integer, nullable=False),
    # What the carrier did: created / replayed / fault:<kind> / rejected:<why>.
    Column("outcome", Text, nullable=False),
    Column("shipment_id", Text),
)

shipments = Table(
    "shipments",
    metadata,
    Column("shipment_id", Text, primary_key=True),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("order_id", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("items", JSONB, nullable=False),
    Column("tracking_number", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

faults = Table(
    "faults",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("fault", Text, nullable=False),
    Column("remaining", Integer, nullable=False),
    Column("delay_s", Float),
)

FAULT_KINDS = ("timeout", "429", "address_error")

# Any constant works; it only has to be the same in every carrier process so two servers
# starting on one database do not race on CREATE TABLE.
_DDL_LOCK_KEY = 0x0CA221E2


@dataclass(frozen=True)
class Shipment:
    """A shipment the carrier created."""

    shipment_id: str
    idempotency_key: str
    order_id: str
    address: str
    items: Any
    tracking_number: str
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        """The API's representation."""
        return {
            "shipment_id": self.shipment_id,
            "order_id": self.order_id,
            "tracking_number": self.tracking_number,
            "address": self.address,
            "items": self.items,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Fault:
    """A fault to inject for one order, taken from ``carrier.faults``."""

    fault: str
    delay_s: float | None


def tracking_number_for(shipment_id: str) -> str:
    """``1Z`` + 16 upper-case hex characters derived from the shipment id (deterministic)."""
    return "1Z" + hashlib.sha256(shipment_id.encode()).hexdigest()[:16].upper()


def create_tables(engine: Engine) -> None:
    """Create the ``carrier`` schema and its tables if missing (safe to run concurrently)."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK_KEY})
        conn.execute(CreateSchema(SCHEMA, if_not_exists=True))
        metadata.create_all(conn)


def record_request(
    engine: Engine,
    *,
    method: str,
    path: str,
    status: int,
    outcome: str,
    order_id: str | None = None,
    idempotency_key: str | None = None,
    shipment_id: str | None = None,
) -> None:
    """Append one received request to ``carrier.requests``."""
    with engine.begin() as conn:
        conn.execute(
            requests.insert().values(
                method=method,
                path=path,
                status=status,
                outcome=outcome,
                order_id=order_id,
                idempotency_key=idempotency_key,
                shipment_id=shipment_id,
            )
        )


def create_or_get_shipment(
    engine: Engine, *, idempotency_key: str, order_id: str, address: str, items: Any
) -> tuple[Shipment, bool]:
    """Create the shipment for ``idempotency_key``, or return the one it already made.

    Returns ``(shipment, created)``. A concurrent request with the same key loses the
    INSERT race on the unique key and reads the winner's row.
    """
    shipment_id = "shp_" + uuid.uuid4().hex
    with engine.begin() as conn:
        inserted = conn.execute(
            insert(shipments)
            .values(
                shipment_id=shipment_id,
                idempotency_key=idempotency_key,
                order_id=order_id,
                address=address,
                items=items,
                tracking_number=tracking_number_for(shipment_id),
            )
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(*shipments.c)
        ).one_or_none()
        if inserted is not None:
            return Shipment(**inserted._mapping), True
        existing = conn.execute(
            select(*shipments.c).where(shipments.c.idempotency_key == idempotency_key)
        ).one()
        return Shipment(**existing._mapping), False


def shipments_for_order(engine: Engine, order_id: str | None) -> list[Shipment]:
    """Shipments for one order (all when ``order_id`` is None), oldest first."""
    query = select(*shipments.c).order_by(shipments.c.created_at, shipments.c.shipment_id)
    if order_id is not None:
        query = query.where(shipments.c.order_id == order_id)
    with engine.connect() as conn:
        return [Shipment(**row._mapping) for row in conn.execute(query)]


def requests_for_order(engine: Engine, order_id: str | None) -> list[dict[str, Any]]:
    """Recorded requests for one order (all when ``order_id`` is None), in arrival order."""
    query = select(*requests.c).order_by(requests.c.request_id)
    if order_id is not None:
        query = query.where(requests.c.order_id == order_id)
    with engine.connect() as conn:
        return [
            {**row._mapping, "received_at": row.received_at.isoformat()}
            for row in conn.execute(query)
        ]


def set_fault(
    engine: Engine, *, order_id: str, fault: str, times: int, delay_s: float | None
) -> None:
    """Make the next ``times`` shipment requests for ``order_id`` misbehave as ``fault``."""
    if fault not in FAULT_KINDS:
        raise ValueError(f"fault must be one of {', '.join(FAULT_KINDS)}, not {fault!r}")
    values = {
        "order_id": order_id,
        "fault": fault,
        "remaining": times,
        "delay_s": delay_s,
    }
    with engine.begin() as conn:
        conn.execute(
            insert(faults)
            .values(**values)
            .on_conflict_do_update(index_elements=["order_id"], set_=values)
        )


def take_fault(engine: Engine, order_id: str) -> Fault | None:
    """Consume one pending fault for ``order_id`` (atomically), or None when there is none."""
    with engine.begin() as conn:
        row = conn.execute(
            faults.update()
            .where(faults.c.order_id == order_id, faults.c.remaining > 0)
            .values(remaining=faults.c.remaining - 1)
            .returning(faults.c.fault, faults.c.delay_s)
        ).one_or_none()
    if row is None:
        return None
    return Fault(fault=row.fault, delay_s=row.delay_s)
