"""The row ledger: which rows of a step are done, and the batch upserts that say so.

Hot-path functions take a raw psycopg connection (the executor holds one for the whole
step) and run named SQL from ``store/queries``; read functions for people and tests take a
SQLAlchemy connection.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from sqlalchemy import ARRAY, Connection, Text, any_, bindparam, func, literal, select

from orbit_pipelines.store.named_sql import load_sql
from orbit_pipelines.store.tables import done_batches, step_rows

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


@dataclass(frozen=True)
class DoneDigests:
    """The digests of a step's rows that need no more work, as blocks of packed 16-byte
    digests: the per-row records' in one block, then one block per done-batch record.

    ``expected`` is how many there are (the per-row ones counted, the batch records'
    ``row_count`` summed), read before the blocks so that a loader can size its arrays;
    iterate ``blocks`` once, inside the transaction that read it.
    """

    expected: int
    blocks: Iterator[bytes]


def load_done_digests(conn: psycopg.Connection, root_run_id: str, step_key: str) -> DoneDigests:
    """Digests of rows done or quarantined, from step_rows and from done_batches.

    The batch records are streamed one by one (a binary COPY: no round trip per few
    records, as a server-side cursor would take): at 10M done rows, 160 MB of digests
    never sit in one value or in one Python list.
    """
    params = {"root_run_id": root_run_id, "step_key": step_key}
    with conn.cursor(binary=True) as cur:
        cur.execute(load_sql("row_done_hashes"), params)
        row = cur.fetchone()
    per_row = bytes(row[0]) if row and row[0] else b""
    batched = int(row[1]) if row else 0

    def blocks() -> Iterator[bytes]:
        nonlocal per_row
        if per_row:
            block, per_row = per_row, b""
            yield block
        if batched:
            statement = f"COPY ({load_sql('done_batch_hashes')}) TO STDOUT (FORMAT binary)"
            with conn.cursor() as cur, cur.copy(statement, params) as copy:
                copy.set_types(["bytea"])
                for (data,) in copy.rows():
                    yield data

    return DoneDigests(len(per_row) // 16 + batched, blocks())


def load_done_hashes(conn: psycopg.Connection, root_run_id: str, step_key: str) -> np.ndarray:
    """All of ``load_done_digests`` as one array (dtype ``S16``, in no particular order):
    for tests and small steps; the executor streams them into its done set instead."""
    digests = load_done_digests(conn, root_run_id, step_key)
    return np.frombuffer(b"".join(digests.blocks), dtype=HASH_DTYPE)


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


def write_done_batch(
    conn: psycopg.Connection,
    root_run_id: str,
    step_key: str,
    run_id: str,
    digests: Sequence[bytes],
    row_keys: Sequence[str],
    results: Sequence[str | None] | None = None,
) -> list[int]:
    """Record plain done rows (never recorded before) as one done-batch record inside the
    caller's transaction; ``results`` are JSON texts aligned with the keys (or None).

    Returns the positions of the rows it left out: a key that is empty or contains the
    separator cannot be joined; the caller records those rows one by one
    (``write_row_outcomes``).
    """
    if not digests:
        return []
    joined = _UNIT_SEPARATOR.join(row_keys)
    left_out: list[int] = []
    # An empty key would vanish in string_to_array; a separator inside a key would split it.
    if joined.count(_UNIT_SEPARATOR) != len(row_keys) - 1 or not all(row_keys):
        left_out = [n for n, k in enumerate(row_keys) if not k or _UNIT_SEPARATOR in k]
        kept = [n for n, k in enumerate(row_keys) if k and _UNIT_SEPARATOR not in k]
        if not kept:
            return left_out
        digests = [digests[n] for n in kept]
        row_keys = [row_keys[n] for n in kept]
        results = [results[n] for n in kept] if results is not None else None
        joined = _UNIT_SEPARATOR.join(row_keys)
    results_json = None
    if results is not None and any(r is not None for r in results):
        results_json = "[" + ",".join("null" if r is None else r for r in results) + "]"
    with conn.cursor() as cur:
        cur.execute(
            load_sql("done_batch_commit"),
            {
                "root_run_id": root_run_id,
                "step_key": step_key,
                "run_id": run_id,
                "row_count": len(digests),
                "key_hashes": b"".join(digests),
                "row_keys": joined,
                "results": results_json,
            },
        )
    return left_out


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
    """How many rows of a step are in each status (both ledgers)."""
    return status_counts(conn, [root_run_id], step_key).get((root_run_id, step_key), {})


def status_counts(
    conn: Connection, root_run_ids: Sequence[str], step_key: str | None = None
) -> dict[tuple[str, str], dict[str, int]]:
    """Rows per (root run id, step key) and status for these groups (of one step only, if
    ``step_key``): per-row records counted, done-batch records' ``row_count`` summed as
    done (never unnested). Two queries whatever the number of groups."""
    if not root_run_ids:
        return {}
    # One array parameter: IN would bind (and compile) one parameter per group.
    roots = bindparam("roots", list(root_run_ids), type_=ARRAY(Text))
    per_row = select(
        step_rows.c.root_run_id, step_rows.c.step_key, step_rows.c.status, func.count()
    ).where(step_rows.c.root_run_id == any_(roots))
    batched = select(
        done_batches.c.root_run_id,
        done_batches.c.step_key,
        literal("done"),
        func.sum(done_batches.c.row_count),
    ).where(done_batches.c.root_run_id == any_(roots))
    if step_key is not None:
        per_row = per_row.where(step_rows.c.step_key == step_key)
        batched = batched.where(done_batches.c.step_key == step_key)
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for stmt in (
        per_row.group_by(step_rows.c.root_run_id, step_rows.c.step_key, step_rows.c.status),
        batched.group_by(done_batches.c.root_run_id, done_batches.c.step_key),
    ):
        for root, step, status, n in conn.execute(stmt):
            into = counts.setdefault((root, step), {})
            into[status] = into.get(status, 0) + int(n)
    return counts


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
