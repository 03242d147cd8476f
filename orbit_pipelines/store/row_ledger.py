"""The row ledger: which rows of a step are done, and the batch upserts that say so.

Hot-path functions take a raw psycopg connection (the executor holds one for the whole
step) and run named SQL from ``store/queries``; read functions for people and tests take a
SQLAlchemy connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from sqlalchemy import Connection, func, select

from orbit_pipelines.store.named_sql import load_sql
from orbit_pipelines.store.tables import step_rows

HASH_DTYPE = np.dtype("S16")


@dataclass(frozen=True)
class RowOutcomes:
    """Column lists of one batch's row outcomes (one entry per row, in any order)."""

    key_hashes: list[str]
    row_keys: list[str]
    statuses: list[str]
    results: list[str | None]
    error_codes: list[str | None]
    error_messages: list[str | None]


@dataclass(frozen=True)
class TokenOutcomes:
    """Column lists of one batch's token outcomes."""

    key_hashes: list[str]
    token_nos: list[int]
    statuses: list[str]
    results: list[str | None]
    error_codes: list[str | None]
    error_messages: list[str | None]


def load_done_hashes(conn: psycopg.Connection, root_run_id: str, step_key: str) -> np.ndarray:
    """16-byte hashes (dtype ``S16``, in no particular order) of rows done or quarantined.

    One bytea value, read with ``np.frombuffer``: a million hashes are one 16 MB array,
    not a million Python objects.
    """
    with conn.cursor(binary=True) as cur:
        cur.execute(load_sql("row_done_hashes"), {"root_run_id": root_run_id, "step_key": step_key})
        row = cur.fetchone()
    data = bytes(row[0]) if row and row[0] else b""
    return np.frombuffer(data, dtype=HASH_DTYPE)


def load_attempted_hashes(conn: psycopg.Connection, root_run_id: str, step_key: str) -> set[bytes]:
    """Hashes of rows tried before but not finished (failed, held, or with pending tokens)."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("row_attempted_hashes"), {"root_run_id": root_run_id, "step_key": step_key}
        )
        return {row[0].bytes for row in cur.fetchall()}


def has_legacy_rows(conn: psycopg.Connection, root_run_id: str, step_key: str) -> bool:
    """Whether rows of this step were recorded under the old key rule (``str(key)``)."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("row_legacy_exists"), {"root_run_id": root_run_id, "step_key": step_key}
        )
        row = cur.fetchone()
    return bool(row and row[0])


_UNIT_SEPARATOR = "\x1f"


def write_done_rows(
    conn: psycopg.Connection,
    root_run_id: str,
    step_key: str,
    run_id: str,
    digests: Sequence[bytes],
    row_keys: Sequence[str],
) -> bool:
    """Upsert a batch of plain done rows the cheap way; False (nothing written) when a key
    contains the separator and the caller must use ``write_row_outcomes``."""
    joined = _UNIT_SEPARATOR.join(row_keys)
    # An empty key would vanish in string_to_array; a separator inside a key would split it.
    if joined.count(_UNIT_SEPARATOR) != len(row_keys) - 1 or not all(row_keys):
        return False
    with conn.cursor() as cur:
        cur.execute(
            load_sql("row_commit_done"),
            {
                "root_run_id": root_run_id,
                "step_key": step_key,
                "run_id": run_id,
                "key_hashes": b"".join(digests),
                "row_keys": joined,
            },
        )
    return True


def write_row_outcomes(
    conn: psycopg.Connection, root_run_id: str, step_key: str, run_id: str, rows: RowOutcomes
) -> None:
    """Upsert one batch of row outcomes inside the caller's transaction."""
    if not rows.key_hashes:
        return
    with conn.cursor() as cur:
        cur.execute(
            load_sql("row_commit"),
            {
                "root_run_id": root_run_id,
                "step_key": step_key,
                "run_id": run_id,
                "key_hashes": rows.key_hashes,
                "row_keys": rows.row_keys,
                "statuses": rows.statuses,
                "results": rows.results,
                "error_codes": rows.error_codes,
                "error_messages": rows.error_messages,
            },
        )


def write_token_outcomes(
    conn: psycopg.Connection, root_run_id: str, step_key: str, tokens: TokenOutcomes
) -> None:
    """Upsert token outcomes of forked rows inside the caller's transaction."""
    if not tokens.key_hashes:
        return
    with conn.cursor() as cur:
        cur.execute(
            load_sql("token_commit"),
            {
                "root_run_id": root_run_id,
                "step_key": step_key,
                "key_hashes": tokens.key_hashes,
                "token_nos": tokens.token_nos,
                "statuses": tokens.statuses,
                "results": tokens.results,
                "error_codes": tokens.error_codes,
                "error_messages": tokens.error_messages,
            },
        )


def done_token_numbers(
    conn: psycopg.Connection, root_run_id: str, step_key: str, key_hash_hex: str
) -> set[int]:
    """Token numbers of one row that an earlier attempt finished."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("token_done_for_row"),
            {"root_run_id": root_run_id, "step_key": step_key, "key_hash": key_hash_hex},
        )
        return {int(row[0]) for row in cur.fetchall()}


def row_status_counts(conn: Connection, root_run_id: str, step_key: str) -> dict[str, int]:
    """How many rows of a step are in each status."""
    stmt = (
        select(step_rows.c.status, func.count())
        .where(step_rows.c.root_run_id == root_run_id, step_rows.c.step_key == step_key)
        .group_by(step_rows.c.status)
    )
    return {status: int(n) for status, n in conn.execute(stmt)}


@dataclass(frozen=True)
class RowProblem:
    """A row that is not done: failed, quarantined or held, with its reason."""

    row_key: str
    status: str
    attempt: int
    error_code: str | None
    error_message: str | None


def row_problems(
    conn: Connection, root_run_id: str, step_key: str, *, limit: int = 100
) -> Sequence[RowProblem]:
    """Rows of a step that are failed, quarantined or held (first ``limit``, by key)."""
    stmt = (
        select(
            step_rows.c.row_key,
            step_rows.c.status,
            step_rows.c.attempt,
            step_rows.c.error_code,
            step_rows.c.error_message,
        )
        .where(
            step_rows.c.root_run_id == root_run_id,
            step_rows.c.step_key == step_key,
            step_rows.c.status != "done",
        )
        .order_by(step_rows.c.row_key)
        .limit(limit)
    )
    return [RowProblem(*row) for row in conn.execute(stmt)]
