"""The idempotency ledger: one row per effect key, intent -> succeeded / failed / in_doubt.

``claim``/``finish`` run on a raw psycopg connection (the executor's); the functions a
person uses through the CLI (list what is in doubt, resolve it) take a SQLAlchemy one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import ColumnElement, Connection, and_, or_, select, update

from orbit_pipelines.errors import E1003_INVALID_VALUE, OrbitError
from orbit_pipelines.store import value_codec
from orbit_pipelines.store.fences import FencedOut
from orbit_pipelines.store.named_sql import load_sql
from orbit_pipelines.store.tables import effects

RECEIVERS = ("idempotent", "transactional", "unsafe")


@dataclass(frozen=True)
class EffectRecord:
    """What the ledger holds for one key."""

    status: str
    receiver: str
    result: Any
    error_code: str | None
    error_message: str | None
    attempts: int
    row_key: str | None = None
    row_hash: str | None = None


def claim(
    conn: psycopg.Connection,
    *,
    effect_key: str,
    root_run_id: str,
    step_key: str,
    row_key: str | None,
    row_hash: bytes | None,
    receiver: str,
    status: str,
    run_id: str,
    epoch: int,
) -> EffectRecord | None:
    """Insert the key with ``status``; None when inserted (ours), else the existing record.

    The existing record is read ``FOR UPDATE`` so the caller's next write on it cannot race
    another claimer. Raises ``FencedOut`` when there is no record and this execution's
    ``epoch`` no longer owns the step (the insert is conditional on it).
    """
    with conn.cursor() as cur:
        cur.execute(
            load_sql("effect_claim"),
            {
                "effect_key": effect_key,
                "root_run_id": root_run_id,
                "step_key": step_key,
                "row_key": row_key,
                "row_hash": None if row_hash is None else row_hash.hex(),
                "receiver": receiver,
                "status": status,
                "run_id": run_id,
                "epoch": epoch,
            },
        )
        if cur.fetchone() is not None:
            return None
        cur.execute(load_sql("effect_get"), {"effect_key": effect_key})
        row = cur.fetchone()
    if row is None:
        raise FencedOut(root_run_id, step_key, epoch)
    status_, receiver_, result, code, message, attempts, row_key_, row_hash_ = row
    return EffectRecord(
        status_,
        receiver_,
        value_codec.decode(result),
        code,
        message,
        attempts,
        row_key_,
        None if row_hash_ is None else row_hash_.hex,
    )


def retry(
    conn: psycopg.Connection,
    *,
    effect_key: str,
    status: str,
    run_id: str,
    root_run_id: str,
    step_key: str,
    epoch: int,
) -> None:
    """Start a new attempt of a key (attempts + 1); ``FencedOut`` when no longer the owner."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("effect_retry"),
            {
                "effect_key": effect_key,
                "status": status,
                "run_id": run_id,
                "root_run_id": root_run_id,
                "step_key": step_key,
                "epoch": epoch,
            },
        )
        if cur.rowcount != 1:
            raise FencedOut(root_run_id, step_key, epoch)


def finish(
    conn: psycopg.Connection,
    *,
    effect_key: str,
    status: str,
    result: Any = None,
    error_code: str | None = None,
    error_message: str | None = None,
    resolved_by: str | None = None,
) -> None:
    """Record the outcome of an attempt."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("effect_finish"),
            {
                "effect_key": effect_key,
                "status": status,
                "result": None if result is None else value_codec.encode(result),
                "error_code": error_code,
                "error_message": error_message,
                "resolved_by": resolved_by,
            },
        )


@dataclass(frozen=True)
class OpenEffect:
    """An effect whose outcome is not known: shown by the CLI, settled by a person."""

    effect_key: str
    root_run_id: str
    step_key: str
    row_key: str | None
    receiver: str
    status: str
    attempts: int
    run_id: str | None
    updated_at: datetime


def is_in_doubt() -> ColumnElement[bool]:
    """An effect whose outcome is unknown and unsafe to retry blindly (see
    ``effects_in_doubt``): the one definition every query of effects in doubt uses."""
    return or_(
        effects.c.status == "in_doubt",
        and_(effects.c.status == "intent", effects.c.receiver != "idempotent"),
    )


# The columns of an ``OpenEffect``, in its field order.
OPEN_EFFECT_COLUMNS = (
    effects.c.effect_key,
    effects.c.root_run_id,
    effects.c.step_key,
    effects.c.row_key,
    effects.c.receiver,
    effects.c.status,
    effects.c.attempts,
    effects.c.run_id,
    effects.c.updated_at,
)


def effects_in_doubt(conn: Connection, root_run_id: str | None = None) -> list[OpenEffect]:
    """Effects whose outcome is unknown and unsafe to retry blindly, for one run group or
    all: ``in_doubt``, and an ``intent`` towards a receiver that does not honour the key
    (its process died between recording the intent and the outcome). An intent towards an
    idempotent receiver is safe: a retry with the same key is the reconciliation."""
    stmt = select(*OPEN_EFFECT_COLUMNS).where(is_in_doubt())
    if root_run_id is not None:
        stmt = stmt.where(effects.c.root_run_id == root_run_id)
    return [OpenEffect(*row) for row in conn.execute(stmt.order_by(effects.c.effect_key))]


def resolve_effect(
    conn: Connection,
    effect_key: str,
    outcome: str,
    *,
    result: Any = None,
    resolved_by: str = "user",
) -> bool:
    """Settle an in-doubt (or open intent) effect as ``succeeded`` or ``failed``.

    ``succeeded``: a rerun returns ``result`` without calling the effect. ``failed``: the
    effect did not happen; a rerun performs it again. Returns False when the key is not open.
    """
    if outcome not in ("succeeded", "failed"):
        raise OrbitError(
            E1003_INVALID_VALUE,
            f"outcome must be 'succeeded' or 'failed', not {outcome!r}",
        )
    stmt = (
        update(effects)
        .where(effects.c.effect_key == effect_key, effects.c.status.in_(("intent", "in_doubt")))
        .values(status=outcome, result=value_codec.to_plain(result), resolved_by=resolved_by)
    )
    return conn.execute(stmt).rowcount == 1
