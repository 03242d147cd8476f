"""Sink batches of a step: draft -> executing -> completed / failed, one row per attempt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from sqlalchemy import Connection, select

from orbit_pipelines.store.named_sql import load_sql
from orbit_pipelines.store.tables import batches

BATCH_STATUSES = ("draft", "executing", "completed", "failed")


@dataclass
class UnfinishedBatch:
    """The latest attempt of a batch that did not complete, and its member hashes (hex)."""

    batch_no: int
    attempt: int
    status: str
    members: set[str]


def unfinished_batches(
    conn: psycopg.Connection, root_run_id: str, step_key: str
) -> list[UnfinishedBatch]:
    """Batches to retry, by batch number."""
    found: dict[int, UnfinishedBatch] = {}
    with conn.cursor() as cur:
        cur.execute(
            load_sql("batch_unfinished"), {"root_run_id": root_run_id, "step_key": step_key}
        )
        for batch_no, attempt, status, key_hash in cur.fetchall():
            batch = found.setdefault(batch_no, UnfinishedBatch(batch_no, attempt, status, set()))
            batch.members.add(key_hash.replace("-", ""))
    return list(found.values())


def next_batch_no(conn: psycopg.Connection, root_run_id: str, step_key: str) -> int:
    """The number the next new batch of this step gets."""
    with conn.cursor() as cur:
        cur.execute(load_sql("batch_next_no"), {"root_run_id": root_run_id, "step_key": step_key})
        row = cur.fetchone()
    return int(row[0]) if row else 1


def create_batch(
    conn: psycopg.Connection,
    *,
    root_run_id: str,
    step_key: str,
    run_id: str,
    batch_no: int,
    attempt: int,
    key_hashes: Sequence[str],
    row_keys: Sequence[str],
) -> int:
    """Insert a draft batch with its members; returns its id."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("batch_create"),
            {
                "root_run_id": root_run_id,
                "step_key": step_key,
                "batch_no": batch_no,
                "attempt": attempt,
                "run_id": run_id,
            },
        )
        row = cur.fetchone()
        assert row is not None
        batch_id = int(row[0])
        cur.execute(
            load_sql("batch_add_members"),
            {"batch_id": batch_id, "key_hashes": list(key_hashes), "row_keys": list(row_keys)},
        )
    return batch_id


def set_batch_status(conn: psycopg.Connection, batch_id: int, status: str, run_id: str) -> None:
    """Move a batch to ``status``."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("batch_set_status"), {"batch_id": batch_id, "status": status, "run_id": run_id}
        )


@dataclass(frozen=True)
class BatchAttempt:
    """One attempt of one batch, as stored."""

    batch_no: int
    attempt: int
    status: str
    run_id: str | None


def batch_attempts(conn: Connection, root_run_id: str, step_key: str) -> list[BatchAttempt]:
    """Every attempt of every batch of a step, by batch number then attempt."""
    stmt = (
        select(batches.c.batch_no, batches.c.attempt, batches.c.status, batches.c.run_id)
        .where(batches.c.root_run_id == root_run_id, batches.c.step_key == step_key)
        .order_by(batches.c.batch_no, batches.c.attempt)
    )
    return [BatchAttempt(*row) for row in conn.execute(stmt)]
