"""The idempotency ledger: one compact row per effect key, by the key's digest.

A row holds what a replay needs (status, result, the row it belongs to) and, unless the
effect is a plain first-attempt success, what a person needs to settle it (``detail``: its
key text, row key, receiver, error, attempts, when). Run group, step and run are named once
per step execution in ``orbit.effect_scopes`` (see migration 0008 for the sizes).

An idempotent effect records only its outcome (``record``): a retry with the same key is
its reconciliation, so an intent would cost a write and leave nothing to settle. An unsafe
effect records its intent first (``claim``), and ``finish`` its outcome. ``claim``/``finish``
/``record`` run on a raw psycopg connection (the executor's); the functions a person uses
through the CLI (list what is in doubt, resolve it) take a SQLAlchemy one.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Exists,
    FromClause,
    Integer,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from orbit_pipelines.errors import E1003_INVALID_VALUE, OrbitError
from orbit_pipelines.store import value_codec
from orbit_pipelines.store.fences import FencedOut
from orbit_pipelines.store.named_sql import load_sql
from orbit_pipelines.store.tables import effect_scopes, effects

RECEIVERS = ("idempotent", "transactional", "unsafe")

# The status column's codes (migration 0008).
STATUS = {"intent": 1, "in_doubt": 2, "failed": 3, "succeeded": 4}
STATUS_NAME = {code: name for name, code in STATUS.items()}
OPEN_STATUSES = (STATUS["intent"], STATUS["in_doubt"])


def digest(effect_key: str) -> uuid.UUID:
    """The ledger's key for a full effect key: SHA-256's first 16 bytes (``orbit.effect_digest``
    in SQL computes the same)."""
    return uuid.UUID(bytes=hashlib.sha256(effect_key.encode("utf-8")).digest()[:16])


def row_tag(row_hash: bytes | None) -> int | None:
    """The row's key digest in 8 bytes (``orbit.effect_row_tag``): tells rows apart when one
    reuses another's effect key. A clash would hide that mistake and hand the second row the
    first one's result (4 bytes clashed in a few thousand order keys; 8 is one in 2**64)."""
    if row_hash is None:
        return None
    return int.from_bytes(row_hash[:8], "big", signed=True)


def scope_id(conn: psycopg.Connection, root_run_id: str, step_key: str, run_id: str) -> int:
    """The id naming a step execution in the ledger, created on first use. Call it on an
    autocommit connection: an id created inside a batch that rolls back would vanish."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("effect_scope"),
            {"root_run_id": root_run_id, "step_key": step_key, "run_id": run_id},
        )
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class EffectRecord:
    """What the ledger holds for one key (``receiver``/``row_key`` only while not simply
    done: a plain success keeps neither)."""

    status: str
    receiver: str | None
    result: Any
    error_code: str | None
    error_message: str | None
    attempts: int
    row_key: str | None = None
    row_tag: int | None = None


def _record(status: int, result: Any, tag: int | None, detail: Any) -> EffectRecord:
    info: dict[str, Any] = detail or {}
    return EffectRecord(
        STATUS_NAME[status],
        info.get("receiver"),
        value_codec.decode(result),
        info.get("error_code"),
        info.get("error_message"),
        int(info.get("attempts", 1)),
        info.get("row_key"),
        tag,
    )


def _result_json(result: Any) -> str | None:
    # Compact: a json column keeps the text as written, spaces included.
    if result is None:
        return None
    return json.dumps(value_codec.to_plain(result), allow_nan=False, separators=(",", ":"))


def _detail(**fields: Any) -> Jsonb:
    return Jsonb({k: v for k, v in fields.items() if v is not None})


def lookup(
    conn: psycopg.Connection,
    *,
    effect_key: str,
    root_run_id: str,
    step_key: str,
    epoch: int,
) -> EffectRecord | None:
    """The record of a key, None when there is none; ``FencedOut`` when this execution's
    ``epoch`` no longer owns the step (checked in the same statement)."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("effect_lookup"),
            {
                "key_hash": digest(effect_key),
                "root_run_id": root_run_id,
                "step_key": step_key,
                "epoch": epoch,
            },
        )
        row = cur.fetchone()
    assert row is not None
    owned, status, result, tag, detail = row
    if not owned:
        raise FencedOut(root_run_id, step_key, epoch)
    return None if status is None else _record(status, result, tag, detail)


def record(
    conn: psycopg.Connection,
    *,
    effect_key: str,
    scope: int,
    row_key: str | None,
    row_hash: bytes | None,
    receiver: str,
    status: str,
    result: Any = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> None:
    """Record the outcome of an effect that recorded no intent (a recorded success stays)."""
    plain = status == "succeeded" and error_code is None
    with conn.cursor() as cur:
        cur.execute(
            load_sql("effect_record"),
            {
                "key_hash": digest(effect_key),
                "scope_id": scope,
                "row_tag": row_tag(row_hash),
                "status": STATUS[status],
                "result": _result_json(result),
                "detail": None
                if plain
                else _detail(
                    key=effect_key,
                    row_key=row_key,
                    receiver=receiver,
                    error_code=error_code,
                    error_message=error_message,
                ),
            },
        )


def claim(
    conn: psycopg.Connection,
    *,
    effect_key: str,
    scope: int,
    root_run_id: str,
    step_key: str,
    row_key: str | None,
    row_hash: bytes | None,
    receiver: str,
    status: str,
    epoch: int,
) -> EffectRecord | None:
    """Insert the key with ``status``; None when inserted (ours), else the existing record.

    The existing record is read ``FOR UPDATE`` so the caller's next write on it cannot race
    another claimer. Raises ``FencedOut`` when there is no record and this execution's
    ``epoch`` no longer owns the step (the insert is conditional on it).
    """
    key_hash = digest(effect_key)
    with conn.cursor() as cur:
        cur.execute(
            load_sql("effect_claim"),
            {
                "key_hash": key_hash,
                "scope_id": scope,
                "row_tag": row_tag(row_hash),
                "status": STATUS[status],
                "detail": None
                if status == "succeeded"
                else _detail(key=effect_key, row_key=row_key, receiver=receiver),
                "root_run_id": root_run_id,
                "step_key": step_key,
                "epoch": epoch,
            },
        )
        if cur.fetchone() is not None:
            return None
        cur.execute(load_sql("effect_get"), {"key_hash": key_hash})
        row = cur.fetchone()
    if row is None:
        raise FencedOut(root_run_id, step_key, epoch)
    return _record(*row)


def retry(
    conn: psycopg.Connection,
    *,
    effect_key: str,
    scope: int,
    row_key: str | None,
    receiver: str,
    status: str,
    root_run_id: str,
    step_key: str,
    epoch: int,
) -> None:
    """Start a new attempt of a key (attempts + 1); ``FencedOut`` when no longer the owner."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("effect_retry"),
            {
                "key_hash": digest(effect_key),
                "scope_id": scope,
                "status": STATUS[status],
                "detail": _detail(key=effect_key, row_key=row_key, receiver=receiver),
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
    """Record the outcome of an attempt whose intent (or success) is recorded."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("effect_finish"),
            {
                "key_hash": digest(effect_key),
                "status": STATUS[status],
                "result": _result_json(result),
                "keep_detail": not (
                    status == "succeeded" and error_code is None and resolved_by is None
                ),
                "detail": _detail(
                    error_code=error_code, error_message=error_message, resolved_by=resolved_by
                ),
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


# Effects with the run group, step and run they belong to (filter on effect_scopes'
# columns: a run group's effects are found through its scopes, a few per step).
WITH_SCOPE: FromClause = effects.join(effect_scopes, effects.c.scope_id == effect_scopes.c.scope_id)
EFFECT_KEY = effects.c.detail["key"].astext


def status_name() -> ColumnElement[str]:
    """The status column as the name a person reads (``STATUS``)."""
    return case(STATUS_NAME, value=effects.c.status)


def is_in_doubt() -> ColumnElement[bool]:
    """An effect whose outcome is unknown and unsafe to retry blindly (see
    ``effects_in_doubt``): the one definition every query of effects in doubt uses. The
    status test comes first so the partial index ``effects_open_by_scope`` serves it."""
    return and_(
        effects.c.status.in_(OPEN_STATUSES),
        or_(
            effects.c.status == STATUS["in_doubt"],
            func.coalesce(effects.c.detail["receiver"].astext, "") != "idempotent",
        ),
    )


# The columns of an ``OpenEffect``, in its field order (select them from ``WITH_SCOPE``).
OPEN_EFFECT_COLUMNS = (
    EFFECT_KEY.label("effect_key"),
    effect_scopes.c.root_run_id,
    effect_scopes.c.step_key,
    effects.c.detail["row_key"].astext.label("row_key"),
    effects.c.detail["receiver"].astext.label("receiver"),
    status_name().label("status"),
    func.coalesce(effects.c.detail["attempts"].astext.cast(Integer), 1).label("attempts"),
    func.nullif(effect_scopes.c.run_id, "").label("run_id"),
    # A plain success keeps no time of its own: its step execution's stands in.
    func.coalesce(
        effects.c.detail["at"].astext.cast(DateTime(timezone=True)), effect_scopes.c.created_at
    ).label("updated_at"),
)


def effects_in_doubt(conn: Connection, root_run_id: str | None = None) -> list[OpenEffect]:
    """Effects whose outcome is unknown and unsafe to retry blindly, for one run group or
    all: ``in_doubt``, and an ``intent`` towards a receiver that does not honour the key
    (its process died between recording the intent and the outcome). An intent towards an
    idempotent receiver is safe: a retry with the same key is the reconciliation."""
    stmt = select(*OPEN_EFFECT_COLUMNS).select_from(WITH_SCOPE).where(is_in_doubt())
    if root_run_id is not None:
        stmt = stmt.where(effect_scopes.c.root_run_id == root_run_id)
    return [OpenEffect(*row) for row in conn.execute(stmt.order_by(EFFECT_KEY))]


def in_doubt_exists(root_run_id: Any) -> Exists:
    """EXISTS: the run group (a value or a correlated column) has an effect in doubt."""
    return (
        select(literal(1))
        .select_from(WITH_SCOPE)
        .where(effect_scopes.c.root_run_id == root_run_id, is_in_doubt())
        .exists()
    )


def group_of(conn: Connection, effect_key: str) -> str | None:
    """The run group an effect key was recorded in, or None."""
    return conn.execute(
        select(effect_scopes.c.root_run_id)
        .select_from(WITH_SCOPE)
        .where(effects.c.key_hash == digest(effect_key))
    ).scalar()


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
    The effect keeps its detail (key text, who resolved it): settled by hand is worth a trace.
    """
    if outcome not in ("succeeded", "failed"):
        raise OrbitError(
            E1003_INVALID_VALUE,
            f"outcome must be 'succeeded' or 'failed', not {outcome!r}",
        )
    stmt = (
        update(effects)
        .where(effects.c.key_hash == digest(effect_key), effects.c.status.in_(OPEN_STATUSES))
        .values(
            status=STATUS[outcome],
            result=null() if result is None else value_codec.to_plain(result),
            detail=func.coalesce(effects.c.detail, cast({}, JSONB))
            .op("||")(cast({"resolved_by": resolved_by}, JSONB))
            .op("||")(func.jsonb_build_object(literal_column("'at'"), func.now())),
        )
    )
    return conn.execute(stmt).rowcount == 1


def record_effect(
    conn: Connection,
    *,
    effect_key: str,
    root_run_id: str,
    step_key: str,
    receiver: str,
    status: str,
    row_key: str | None = None,
    row_hash: bytes | None = None,
    run_id: str | None = None,
    attempts: int = 1,
    result: Any = None,
) -> None:
    """Write a ledger row directly, as an execution would have (tests, benchmarks, imports)."""
    scope = conn.exec_driver_sql(
        load_sql("effect_scope"),
        {"root_run_id": root_run_id, "step_key": step_key, "run_id": run_id or ""},
    ).scalar_one()
    conn.execute(
        effects.insert().values(
            key_hash=digest(effect_key),
            scope_id=scope,
            row_tag=row_tag(row_hash),
            status=STATUS[status],
            result=null() if result is None else value_codec.to_plain(result),
            detail=null()
            if status == "succeeded" and attempts == 1
            else {
                "key": effect_key,
                "row_key": row_key,
                "receiver": receiver,
                **({"attempts": attempts} if attempts > 1 else {}),
            },
        )
    )
