"""Sink batches: rows grouped N at a time and handed to a sink (a bulk write, an upload).

Each batch is recorded before the sink sees it (draft, with its members), marked
executing, then completed together with its rows' statuses in one transaction. A batch
interrupted while executing (crash) or failed is retried by the next run as a new attempt
with exactly the same members, so a sink that keys its writes by ``(batch_no)`` can
replace the partial write of the earlier attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import psycopg

from orbit_pipelines.errors import E4004_ROW_FAILED
from orbit_pipelines.execution.done_set import HASH_DTYPE
from orbit_pipelines.execution.executor import (
    KeyFn,
    RowExecutor,
    StepFailed,
    _chunks,
    _infra_failure,
    _Outcomes,
    _row_key,
    error_fields,
)
from orbit_pipelines.execution.heartbeat import beat
from orbit_pipelines.execution.scope import RunSummary
from orbit_pipelines.store import batches as batch_store
from orbit_pipelines.store import row_ledger
from orbit_pipelines.store.faults import is_infrastructure


@dataclass(frozen=True)
class BatchInfo:
    """What the sink is told about the batch it writes.

    ``conn`` is the executor's connection inside the transaction that will mark the batch
    completed: a sink writing to the same Postgres through it commits exactly once.
    """

    batch_id: int
    batch_no: int
    attempt: int
    row_keys: list[str]
    conn: psycopg.Connection


Sink = Callable[[list[Any], BatchInfo], Any]


@dataclass
class _Open:
    batch_no: int
    attempt: int
    members: set[str]
    rows: list[tuple[Any, str, str]]


def run_batches(
    ex: RowExecutor,
    rows: Iterable[Any],
    *,
    key: str | KeyFn,
    sink: Sink,
    batch_size: int | None = None,
) -> RunSummary:
    """Hand the rows that are not done to ``sink`` in batches of ``batch_size``.

    A sink exception marks the batch failed and stops the step (``StepFailed``); the
    next run retries that batch as attempt + 1 with the same members.
    """
    size = batch_size or ex.options.batch_size
    scope = ex.scope
    conn = ex.conn
    key_of: KeyFn = itemgetter(key) if isinstance(key, str) else key
    summary = RunSummary()
    done_set = ex.load_done()
    retry_of: dict[str, _Open] = {}
    waiting: list[_Open] = []
    for old in batch_store.unfinished_batches(conn, scope.root_run_id, scope.step_key):
        hashes = np.frombuffer(b"".join(bytes.fromhex(h) for h in old.members), dtype=HASH_DTYPE)
        left = {
            h for h, done in zip(old.members, done_set.contains(hashes), strict=True) if not done
        }
        if not left:
            continue
        batch = _Open(old.batch_no, old.attempt + 1, left, [])
        waiting.append(batch)
        for member in left:
            retry_of[member] = batch
    next_no = batch_store.next_batch_no(conn, scope.root_run_id, scope.step_key)
    conn.commit()
    fresh = _Open(next_no, 1, set(), [])
    seen = 0
    handled: set[bytes] = set()

    def execute(batch: _Open) -> None:
        _execute(ex, batch, sink, summary)

    for chunk in _chunks(rows, size):
        # A bad key here stops the step (RowKeyError, E-1013/E-1014): a batch has no
        # place to quarantine one member.
        keyed = [_row_key(key_of(r)) for r in chunk]
        keys = [k for k, _ in keyed]
        digests = [d for _, d in keyed]
        is_done = done_set.contains(np.frombuffer(b"".join(digests), dtype=HASH_DTYPE))
        for i, row in enumerate(chunk):
            seen += 1
            if is_done[i]:
                summary.skipped_already_done += 1
                continue
            if digests[i] in handled:
                summary.duplicates += 1  # a sink never gets a key twice in one run
                continue
            handled.add(digests[i])
            hex_hash = digests[i].hex()
            retry = retry_of.pop(hex_hash, None)
            if retry is not None:
                retry.rows.append((row, keys[i], hex_hash))
                if len(retry.rows) == len(retry.members):
                    waiting.remove(retry)
                    execute(retry)
                continue
            fresh.rows.append((row, keys[i], hex_hash))
            if len(fresh.rows) == size:
                execute(fresh)
                next_no += 1
                fresh = _Open(next_no, 1, set(), [])
    # Members the input no longer has cannot be sent; the batch goes with the rows present.
    for retry in waiting:
        if retry.rows:
            execute(retry)
    if fresh.rows:
        execute(fresh)
    summary.rows_total = seen
    return summary


def _execute(ex: RowExecutor, batch: _Open, sink: Sink, summary: RunSummary) -> None:
    scope = ex.scope
    conn = ex.conn
    row_keys = [k for _, k, _ in batch.rows]
    hashes = [h for _, _, h in batch.rows]
    batch_id = batch_store.create_batch(
        conn,
        root_run_id=scope.root_run_id,
        step_key=scope.step_key,
        run_id=scope.run_id,
        batch_no=batch.batch_no,
        attempt=batch.attempt,
        key_hashes=hashes,
        row_keys=row_keys,
    )
    conn.commit()
    batch_store.set_batch_status(conn, batch_id, "executing", scope.run_id)
    conn.commit()
    info = BatchInfo(batch_id, batch.batch_no, batch.attempt, row_keys, conn)
    try:
        sink([row for row, _, _ in batch.rows], info)
    except Exception as error:
        conn.rollback()
        if is_infrastructure(error):
            # Not the rows' fault: nothing about them is recorded; the batch stays
            # 'executing' and the next run retries it as a new attempt, same members.
            raise _infra_failure(error, summary, f"batch {batch.batch_no}") from error
        code, message = error_fields(error)
        batch_store.set_batch_status(conn, batch_id, "failed", scope.run_id)
        out = _Outcomes()
        for row_key, hex_hash in zip(row_keys, hashes, strict=True):
            out.add(bytes.fromhex(hex_hash), row_key, "failed", None, code, message)
        row_ledger.write_row_outcomes(
            conn, scope.root_run_id, scope.step_key, scope.run_id, out.rows()
        )
        ex.check_fence()
        conn.commit()
        summary.failed += len(row_keys)
        raise StepFailed(
            code or E4004_ROW_FAILED.code,
            f"batch {batch.batch_no} attempt {batch.attempt}: {message}",
            summary,
        ) from error
    out = _Outcomes()
    for row_key, hex_hash in zip(row_keys, hashes, strict=True):
        out.add(bytes.fromhex(hex_hash), row_key, "done", None)
    ex.write_outcomes(out)
    batch_store.set_batch_status(conn, batch_id, "completed", scope.run_id)
    summary.done += len(row_keys)
    ex.check_fence()
    beat(conn, scope, ex.epoch, summary.done + summary.skipped_already_done, None)
    conn.commit()
    summary.batches_committed += 1
