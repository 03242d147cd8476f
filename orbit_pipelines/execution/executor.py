"""The row executor: run only the rows of a step that are not done, commit in batches.

    with RowExecutor(engine, RunScope(root_run_id, run_id, step_key),
                     ExecutorOptions(batch_size=1000, on_error="quarantine")) as ex:
        summary = ex.run(rows, key="order_id", handler=handle, aggregations={"total": Sum()})

Every batch commits, in one transaction: the row statuses, the tokens of forked rows, the
aggregation states (which reflect exactly those rows), the transactional effects and a
heartbeat. A crash loses at most the batch in flight; the next run loads the done set
once (one sorted array) and skips those rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from hashlib import blake2b
from itertools import islice
from operator import itemgetter
from types import TracebackType
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import Engine

from orbit_pipelines.errors import (
    E4002_EFFECT_IN_DOUBT,
    E4004_ROW_FAILED,
    OrbitError,
    concerns_only_its_row,
    lookup,
)
from orbit_pipelines.execution.aggregations import Aggregation
from orbit_pipelines.execution.done_set import HASH_DTYPE, DoneSet
from orbit_pipelines.execution.effects import EffectGuard, EffectInDoubt
from orbit_pipelines.execution.heartbeat import HeartbeatThread, beat
from orbit_pipelines.execution.row_context import RowContext
from orbit_pipelines.execution.scope import ExecutorOptions, ProgressEvent, RunScope, RunSummary
from orbit_pipelines.store import row_ledger
from orbit_pipelines.store.aggregation_state import load_aggregations, save_aggregations
from orbit_pipelines.store.raw_connection import connect_raw

Handler = Callable[[Any, RowContext], Any]
KeyFn = Callable[[Any], Any]


class StepFailed(OrbitError):
    """The step stops: a row failed (fail_fast, or a retryable error), or rows are held.

    The message starts with the code ("E-3001 row 17: carrier timeout") so whoever reads
    only the text (the recovery sensor, a person) sees it; ``code`` holds it too.
    ``summary`` is what was done up to the stop, already committed.
    """

    def __init__(self, code: str, message: str, summary: RunSummary) -> None:
        super().__init__(lookup(code) or E4004_ROW_FAILED, message)
        self.summary = summary


def error_fields(error: BaseException) -> tuple[str, str]:
    """(code, message) recorded for a failing row or token."""
    if isinstance(error, OrbitError):
        return error.code, error.message
    return E4004_ROW_FAILED.code, f"{type(error).__name__}: {error}"


def row_key_hash(row_key: str) -> bytes:
    """The 128-bit blake2b digest that keys a row in the ledger."""
    return blake2b(row_key.encode(), digest_size=16).digest()


def _chunks(rows: Any, size: int) -> Iterator[list[Any]]:
    if type(rows).__module__.startswith("pandas") and hasattr(rows, "iloc"):
        # Only one batch of dicts exists at a time, whatever the frame's length.
        for start in range(0, len(rows), size):
            yield rows.iloc[start : start + size].to_dict("records")
        return
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


class RowExecutor:
    """Runs a step's rows with checkpoints. Use as a context manager (it holds a
    connection and a heartbeat thread)."""

    def __init__(
        self,
        engine: Engine,
        scope: RunScope,
        options: ExecutorOptions | None = None,
        *,
        progress: Callable[[ProgressEvent], None] | None = None,
    ) -> None:
        self.engine = engine
        self.scope = scope
        self.options = options or ExecutorOptions()
        self._progress_cb = progress
        self._conn: psycopg.Connection | None = None
        self._side_conn: psycopg.Connection | None = None
        self._heartbeat: HeartbeatThread | None = None
        self._attempted: set[bytes] = set()
        self._aggs: dict[str, Aggregation] = {}
        self._states: dict[str, Any] = {}
        self._rows_reflected = 0
        self._committed_rows = 0
        self._rows_total: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> RowExecutor:
        self._conn = connect_raw(self.engine)
        self._effects = EffectGuard(self.scope, self._conn, self._side)
        self._heartbeat = HeartbeatThread(
            lambda: connect_raw(self.engine, autocommit=True),
            self.scope,
            lambda: (self._committed_rows, self._rows_total),
            self.options.heartbeat_every_s,
        )
        self._heartbeat.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        for conn in (self._conn, self._side_conn):
            if conn is not None and not conn.closed:
                conn.rollback()  # whatever a failure left open is not committed
                conn.close()
        self._conn = self._side_conn = None

    def _side(self) -> psycopg.Connection:
        # Effect intents must be durable before the call, independent of the batch.
        if self._side_conn is None or self._side_conn.closed:
            self._side_conn = connect_raw(self.engine, autocommit=True)
        return self._side_conn

    @property
    def conn(self) -> psycopg.Connection:
        """The batch-transaction connection (only inside ``with``)."""
        if self._conn is None:
            raise RuntimeError("use RowExecutor as a context manager: `with RowExecutor(...)`")
        return self._conn

    # -- helpers used by RowContext ----------------------------------------------------------

    def _fold(self, values: list[tuple[str, Any]]) -> None:
        for name, value in values:
            self._states[name] = self._aggs[name].fold(self._states[name], value)

    def _finished_tokens(self, key_hash: bytes) -> set[int]:
        if key_hash not in self._attempted:
            return set()
        return row_ledger.done_token_numbers(
            self.conn, self.scope.root_run_id, self.scope.step_key, key_hash.hex()
        )

    # -- resume state ----------------------------------------------------------------------

    def load_done(self) -> DoneSet:
        """The done set of this step (also used by ``run_batches``)."""
        hashes = row_ledger.load_done_hashes(self.conn, self.scope.root_run_id, self.scope.step_key)
        self._attempted = row_ledger.load_attempted_hashes(
            self.conn, self.scope.root_run_id, self.scope.step_key
        )
        self.conn.commit()
        return DoneSet(hashes)

    def _load_aggregations(self, aggregations: Mapping[str, Aggregation] | None) -> None:
        self._aggs = dict(aggregations or {})
        saved, reflected = load_aggregations(self.conn, self.scope.root_run_id, self.scope.step_key)
        self._states = {n: saved[n] if n in saved else a.initial() for n, a in self._aggs.items()}
        self._rows_reflected = reflected

    # -- the loop ----------------------------------------------------------------------------

    def run(
        self,
        rows: Iterable[Any],
        *,
        key: str | KeyFn,
        handler: Handler,
        aggregations: Mapping[str, Aggregation] | None = None,
    ) -> RunSummary:
        """Run ``handler(row, ctx)`` on every row not already done; return the counts.

        ``key`` is a column/dict key name or a function giving the row's stable key.
        Raises ``StepFailed`` (after committing everything before it) when a row fails in
        fail_fast mode, a row raises a retryable error, or effects are held in doubt.
        """
        started = time.monotonic()
        key_of: KeyFn = itemgetter(key) if isinstance(key, str) else key
        total = len(rows) if hasattr(rows, "__len__") else None  # type: ignore[arg-type]
        self._rows_total = total
        summary = RunSummary()
        done_set = self.load_done()
        self._load_aggregations(aggregations)
        ctx = RowContext(self, self._aggs)
        pending_agg = ctx._pending_agg
        quarantine = self.options.on_error == "quarantine"
        reporter = _ProgressReporter(self.options, total, self._progress_cb)
        stop: StepFailed | None = None
        seen = 0

        for chunk in _chunks(rows, self.options.batch_size):
            keys = [str(key_of(r)) for r in chunk]
            digests = [blake2b(k.encode(), digest_size=16).digest() for k in keys]
            is_done = done_set.contains(np.frombuffer(b"".join(digests), dtype=HASH_DTYPE))
            pending = np.flatnonzero(~is_done).tolist()
            summary.skipped_already_done += len(chunk) - len(pending)
            unique = len(set(digests)) == len(digests)
            in_chunk: set[bytes] = set()
            out = _Outcomes()
            i = -1
            for i in pending:
                row = chunk[i]
                digest = digests[i]
                if not unique:
                    if digest in in_chunk:
                        summary.duplicates += 1
                        continue
                    in_chunk.add(digest)
                row_key = keys[i]
                ctx._reset(row_key, digest)
                try:
                    handler(row, ctx)
                except EffectInDoubt as error:
                    summary.held += 1
                    out.add(digest, row_key, "failed", None, error.code, error.message)
                    out.add_tokens(ctx)
                    continue
                except Exception as error:
                    code, message = error_fields(error)
                    out.add_tokens(ctx)
                    if quarantine and concerns_only_its_row(code):
                        summary.quarantined += 1
                        out.add(digest, row_key, "quarantined", None, code, message)
                        continue
                    summary.failed += 1
                    out.add(digest, row_key, "failed", None, code, message)
                    stop = StepFailed(code, f"row {row_key}: {message}", summary)
                    break
                status = "done"
                if ctx._tokens:
                    out.add_tokens(ctx)
                    status = _row_status_from_tokens(ctx)
                if status == "done":
                    if pending_agg:
                        self._fold(pending_agg)
                    summary.done += 1
                    self._rows_reflected += 1
                    result = ctx._result
                    out.add(digest, row_key, "done", None if result is None else json.dumps(result))
                elif status == "pending":
                    summary.incomplete += 1
                    out.add(digest, row_key, "pending", None)
                else:
                    failed = next(t for t in ctx._tokens or () if t.status == "failed")
                    code = failed.error_code or E4004_ROW_FAILED.code
                    message = f"token {failed.no}: {failed.error_message}"
                    if quarantine:
                        summary.quarantined += 1
                        out.add(digest, row_key, "quarantined", None, code, message)
                    else:
                        summary.failed += 1
                        out.add(digest, row_key, "failed", None, code, message)
                        stop = StepFailed(code, f"row {row_key}: {message}", summary)
                        break
            seen += len(chunk) if stop is None else i + 1  # rows after the stop never ran
            if out.digests:
                self._commit(out, summary)
            reporter.maybe_report(seen, summary)
            if stop is not None:
                break

        summary.rows_total = seen if total is None else total
        summary.elapsed_s = time.monotonic() - started
        summary.aggregations = dict(self._states)
        reporter.report(seen, summary, final=True)
        if stop is not None:
            raise stop
        if summary.held:
            raise StepFailed(
                E4002_EFFECT_IN_DOUBT.code,
                f"{summary.held} row(s) held: a side effect may have happened before a crash; "
                "reconcile or resolve the in-doubt effects, then rerun",
                summary,
            )
        return summary

    def _commit(self, out: _Outcomes, summary: RunSummary) -> None:
        scope = self.scope
        conn = self.conn
        if not (
            out.plain
            and row_ledger.write_done_rows(
                conn, scope.root_run_id, scope.step_key, scope.run_id, out.digests, out.row_keys
            )
        ):
            row_ledger.write_row_outcomes(
                conn, scope.root_run_id, scope.step_key, scope.run_id, out.rows()
            )
        if out.tokens.key_hashes:
            row_ledger.write_token_outcomes(conn, scope.root_run_id, scope.step_key, out.tokens)
        save_aggregations(
            conn, scope.root_run_id, scope.step_key, self._states, self._rows_reflected
        )
        rows_done = summary.done + summary.skipped_already_done + summary.quarantined
        beat(conn, scope, rows_done, self._rows_total)
        conn.commit()
        self._committed_rows = rows_done
        summary.batches_committed += 1


def _row_status_from_tokens(ctx: RowContext) -> str:
    statuses = {t.status for t in ctx._tokens or ()}
    if "failed" in statuses:
        return "failed"
    if "pending" in statuses:
        return "pending"
    return "done"


class _Outcomes:
    """Column lists of one batch (the shape the upsert takes)."""

    __slots__ = (
        "digests",
        "error_codes",
        "error_messages",
        "plain",
        "results",
        "row_keys",
        "statuses",
        "tokens",
    )

    def __init__(self) -> None:
        # True while every row is done with no result: the batch can take the cheap upsert.
        self.plain = True
        self.digests: list[bytes] = []
        self.row_keys: list[str] = []
        self.statuses: list[str] = []
        self.results: list[str | None] = []
        self.error_codes: list[str | None] = []
        self.error_messages: list[str | None] = []
        self.tokens = row_ledger.TokenOutcomes([], [], [], [], [], [])

    def add(
        self,
        digest: bytes,
        row_key: str,
        status: str,
        result: str | None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        if status != "done" or result is not None:
            self.plain = False
        self.digests.append(digest)
        self.row_keys.append(row_key)
        self.statuses.append(status)
        self.results.append(result)
        self.error_codes.append(code)
        self.error_messages.append(message)

    def add_tokens(self, ctx: RowContext) -> None:
        tokens = self.tokens
        for token in ctx._tokens or ():
            tokens.key_hashes.append(ctx.key_hash.hex())
            tokens.token_nos.append(token.no)
            tokens.statuses.append(token.status)
            tokens.results.append(None if token.result is None else json.dumps(token.result))
            tokens.error_codes.append(token.error_code)
            tokens.error_messages.append(token.error_message)

    def rows(self) -> row_ledger.RowOutcomes:
        return row_ledger.RowOutcomes(
            [d.hex() for d in self.digests],
            self.row_keys,
            self.statuses,
            self.results,
            self.error_codes,
            self.error_messages,
        )


class _ProgressReporter:
    """Calls the progress callback each time another ``progress_every_pct`` is crossed."""

    def __init__(
        self,
        options: ExecutorOptions,
        total: int | None,
        callback: Callable[[ProgressEvent], None] | None,
    ) -> None:
        self._callback = callback
        self._total = total
        if total:
            self._step = max(1, int(total * options.progress_every_pct / 100))
        else:
            self._step = max(1, options.progress_every_rows)
        self._next = self._step

    def maybe_report(self, seen: int, summary: RunSummary) -> None:
        if self._callback is None or seen < self._next:
            return
        while self._next <= seen:
            self._next += self._step
        self.report(seen, summary)

    def report(self, seen: int, summary: RunSummary, *, final: bool = False) -> None:
        if self._callback is None:
            return
        self._callback(
            ProgressEvent(
                rows_seen=seen,
                rows_total=self._total,
                done=summary.done,
                skipped_already_done=summary.skipped_already_done,
                quarantined=summary.quarantined,
                failed=summary.failed,
                held=summary.held,
                final=final,
            )
        )
