"""The row executor: run only the rows of a step that are not done, commit in batches.

    with RowExecutor(engine, RunScope(root_run_id, run_id, step_key),
                     ExecutorOptions(batch_size=1000, on_error="quarantine")) as ex:
        summary = ex.run(rows, key="order_id", handler=handle, aggregations={"total": Sum()})

Every batch commits, in one transaction: the row statuses, the tokens of forked rows, the
aggregation states (which reflect exactly those rows), the transactional effects, a
heartbeat and the check of this execution's fencing epoch. A crash loses at most the
batch in flight; the next run loads the done set once (one sorted array) and skips those
rows. What goes wrong is classified before anything is recorded:

- a fault of the row (a bad or missing key, a value that cannot be recorded or aggregated,
  an error the handler raised) quarantines that row (or stops the step in fail_fast mode);
- a fault of the infrastructure (Postgres down, restarting, out of connections or disk)
  stops the step with the retryable E-3010 and records nothing about the row;
- a newer execution owning the step (a recovery took over while this one was paused)
  stops it with E-4009 and nothing of the batch commits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from hashlib import blake2b
from itertools import islice
from operator import itemgetter
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np
import psycopg
from sqlalchemy import Engine

from orbit_pipelines.errors import (
    E1013_KEY_MISSING,
    E1014_KEY_UNUSABLE,
    E1015_VALUE_UNRECORDABLE,
    E3010_DATABASE_UNAVAILABLE,
    E4002_EFFECT_IN_DOUBT,
    E4004_ROW_FAILED,
    E4009_STALE_EXECUTION,
    OrbitError,
    concerns_only_its_row,
    lookup,
)
from orbit_pipelines.execution.aggregations import Aggregation
from orbit_pipelines.execution.done_set import HASH_DTYPE, DoneSet, DoneSetBuilder, SeenKeys
from orbit_pipelines.execution.effects import EffectGuard, EffectInDoubt
from orbit_pipelines.execution.heartbeat import HeartbeatThread, beat
from orbit_pipelines.execution.keys import (
    RowKeyError,
    batch_keys,
    canonical_key,
    printable,
    row_key_hash,
)
from orbit_pipelines.execution.row_context import RowContext
from orbit_pipelines.execution.scope import ExecutorOptions, ProgressEvent, RunScope, RunSummary
from orbit_pipelines.execution.side_connection import SideConnection
from orbit_pipelines.store import row_ledger
from orbit_pipelines.store.aggregation_state import load_aggregations, save_aggregations
from orbit_pipelines.store.faults import is_infrastructure
from orbit_pipelines.store.fences import FencedOut, claim_epoch, current_epoch
from orbit_pipelines.store.raw_connection import connect_raw
from orbit_pipelines.store.value_codec import safe_text

Handler = Callable[[Any, RowContext], Any]
KeyFn = Callable[[Any], Any]

__all__ = ["PreparedKey", "RowExecutor", "StaleExecution", "StepFailed", "row_key_hash"]


class PreparedKey(NamedTuple):
    """A valid row key whose display form and 16-byte digest the caller already computed by
    the one key rule (``canonical_key``), e.g. for a whole column at once: ``run`` takes it
    as it is instead of hashing the key again. Never for a step with legacy ledger rows
    (the old-rule check needs the raw value)."""

    display: str
    digest: bytes


class StepFailed(OrbitError):
    """The step stops: a row failed (fail_fast, or a retryable error), rows are held, the
    database failed under it (E-3010), or a newer execution owns it (E-4009).

    The message starts with the code ("E-3001 row 17: carrier timeout") so whoever reads
    only the text (the recovery sensor, a person) sees it; ``code`` holds it too.
    ``summary`` is what was done up to the stop, already committed.
    """

    def __init__(self, code: str, message: str, summary: RunSummary) -> None:
        super().__init__(lookup(code) or E4004_ROW_FAILED, message)
        self.summary = summary


class StaleExecution(StepFailed):
    """E-4009: a newer execution of this step (a recovery) took it over; nothing of this
    execution's batch in flight was recorded, and it must not go on."""

    def __init__(self, fenced: FencedOut, summary: RunSummary) -> None:
        super().__init__(E4009_STALE_EXECUTION.code, fenced.message, summary)


def error_fields(error: BaseException) -> tuple[str, str]:
    """(code, message) recorded for a failing row or token."""
    if isinstance(error, OrbitError):
        return error.code, safe_text(error.message)
    return E4004_ROW_FAILED.code, safe_text(f"{type(error).__name__}: {error}")


def _infra_failure(error: BaseException, summary: RunSummary, where: str) -> StepFailed:
    return StepFailed(
        E3010_DATABASE_UNAVAILABLE.code,
        f"{where}: the database failed under the step ({type(error).__name__}: "
        f"{safe_text(str(error), 300)}); no row was blamed, the step stops and recovery "
        "reruns the rows not yet committed",
        summary,
    )


def _chunks(rows: Any, size: int) -> Iterator[list[Any]]:
    if type(rows).__module__.startswith("pandas") and hasattr(rows, "iloc"):
        # Only one batch of dicts exists at a time, whatever the frame's length.
        for start in range(0, len(rows), size):
            yield rows.iloc[start : start + size].to_dict("records")
        return
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def _row_key(value: Any) -> tuple[str, bytes]:
    if type(value) is PreparedKey:
        return value
    # The common case first: a plain string key is its own display and its UTF-8 digest.
    if type(value) is str and value and "\x00" not in value:
        try:
            return value, blake2b(value.encode(), digest_size=16).digest()
        except UnicodeEncodeError:
            pass
    key = canonical_key(value)
    return key.display, key.digest


def _keys_of(
    chunk: list[Any], key_of: KeyFn, key: Any, offset: int
) -> tuple[list[str], list[bytes], dict[int, OrbitError]]:
    """Display keys and digests of a chunk, and the rows whose key is missing or unusable
    (by their index in the chunk): those are failed like a row, never handled."""
    try:
        values = list(map(key_of, chunk))
    except Exception:
        # Some row has no key: the row-by-row pass below names it (key functions are
        # pure, so asking them again is only time, and only for this chunk).
        values = None
    if values is not None:
        fast = batch_keys(values)
        if fast is not None:
            return fast[0], fast[1], {}
        if values and set(map(type, values)) == {PreparedKey}:
            return [v.display for v in values], [v.digest for v in values], {}
    return _keys_one_by_one(chunk, key_of, key, offset)


def _keys_one_by_one(
    chunk: list[Any], key_of: KeyFn, key: Any, offset: int
) -> tuple[list[str], list[bytes], dict[int, OrbitError]]:
    keys: list[str] = []
    digests: list[bytes] = []
    problems: dict[int, OrbitError] = {}
    for n, row in enumerate(chunk):
        try:
            display, digest = _row_key(key_of(row))
        except RowKeyError as error:
            display, problems[n] = error.display, error
            # No identity of its own: named by its place in the input, the same on every
            # attempt over the same input.
            digest = _position_digest(offset + n)
        except (KeyError, IndexError, AttributeError, TypeError) as error:
            display = f"#{offset + n}"
            problems[n] = OrbitError(E1013_KEY_MISSING, f"row has no key {key!r} ({error!r})")
            digest = _position_digest(offset + n)
        except Exception as error:
            if is_infrastructure(error):
                raise
            display = f"#{offset + n}"
            problems[n] = OrbitError(
                E1014_KEY_UNUSABLE,
                f"the key function raised for this row ({type(error).__name__}: "
                f"{safe_text(str(error), 200)})",
            )
            digest = _position_digest(offset + n)
        keys.append(display)
        digests.append(digest)
    return keys, digests, problems


def _done_under_old_rule(
    done_set: DoneSet, chunk: list[Any], key_of: KeyFn, problems: dict[int, OrbitError]
) -> np.ndarray:
    """Rows with a non-string key that a ledger written before the typed key rule has as
    done under the digest of ``str(key)``: without this, an int-keyed step in flight
    across the upgrade would redo its done rows and count them twice in its aggregations."""
    found = np.zeros(len(chunk), dtype=bool)
    at = [n for n in range(len(chunk)) if n not in problems]
    values = [key_of(chunk[n]) for n in at]
    old = [(n, str(v)) for n, v in zip(at, values, strict=True) if type(v) is not str]
    if not old:
        return found
    digests = b"".join(blake2b(text.encode(), digest_size=16).digest() for _, text in old)
    hit = done_set.contains(np.frombuffer(digests, dtype=HASH_DTYPE))
    found[[n for n, _ in old]] = hit
    return found


def _position_digest(position: int) -> bytes:
    # Tagged with NUL like every non-string key, so no valid key can produce it.
    return blake2b(f"\x00!{position}".encode(), digest_size=16).digest()


class RowExecutor:
    """Runs a step's rows with checkpoints. Use as a context manager: it holds two
    connections (the batch transaction, and an autocommit one shared by effect intents and
    the heartbeat thread), the step's fencing epoch and the heartbeat thread."""

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
        self._side = SideConnection(lambda: connect_raw(engine, autocommit=True))
        self._heartbeat: HeartbeatThread | None = None
        self._epoch = 0
        self._legacy = False
        # The current ``run``'s done set and the keys it handled so far: read by the frame
        # path, which hands a chunk to its handler before the executor sees its rows.
        self.run_done_set: DoneSet | None = None
        self.seen_keys = HandledKeys()
        self._attempted: set[bytes] = set()
        self._aggs: dict[str, Aggregation] = {}
        self._states: dict[str, Any] = {}
        self._rows_reflected = 0
        self._committed_rows = 0
        self._rows_total: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> RowExecutor:
        try:
            self._conn = connect_raw(self.engine)
            with self._conn.cursor() as cur:
                cur.execute(
                    "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                    (f"{int(self.options.idle_in_transaction_timeout_s * 1000)}ms",),
                )
            # Claimed before the done set is read: an older owner's commit either landed
            # before this claim (and is read) or is refused after it.
            self._epoch = claim_epoch(
                self._conn, self.scope.root_run_id, self.scope.step_key, self.scope.run_id
            )
            self._conn.commit()
        except psycopg.Error as error:
            self._close()
            if is_infrastructure(error):
                raise _infra_failure(error, RunSummary(), "starting the step") from error
            raise
        self._effects = EffectGuard(
            self.scope, self._conn, self._side, self._epoch, self.open_batch
        )
        self._heartbeat = HeartbeatThread(
            self._side,
            self.scope,
            self._epoch,
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
        self._close()

    def _close(self) -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            _rollback_quietly(conn)  # whatever a failure left open is not committed
            conn.close()
        self._conn = None
        self._side.close()

    @property
    def conn(self) -> psycopg.Connection:
        """The batch-transaction connection (only inside ``with``)."""
        if self._conn is None:
            raise RuntimeError("use RowExecutor as a context manager: `with RowExecutor(...)`")
        return self._conn

    @property
    def epoch(self) -> int:
        """This execution's fencing epoch for the step."""
        return self._epoch

    # -- fencing -----------------------------------------------------------------------------

    def open_batch(self) -> None:
        """Open the batch transaction now (before a transactional effect) and find out early
        when a newer execution took the step."""
        conn = self.conn
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return
        owner = current_epoch(conn, self.scope.root_run_id, self.scope.step_key, lock=False)
        if owner != self._epoch:
            raise self._fenced()

    def _fenced(self) -> FencedOut:
        return FencedOut(self.scope.root_run_id, self.scope.step_key, self._epoch)

    def check_fence(self) -> None:
        """Inside the caller's transaction: raise ``FencedOut`` unless this execution still
        owns the step, and hold off a newer claim until that transaction ends."""
        owner = current_epoch(self.conn, self.scope.root_run_id, self.scope.step_key, lock=True)
        if owner != self._epoch:
            raise self._fenced()

    def _superseded(self) -> bool:
        # After a failed commit: was it the server, or did the step change hands meanwhile?
        try:
            with self._side.use() as side:
                owner = current_epoch(side, self.scope.root_run_id, self.scope.step_key, lock=False)
        except psycopg.Error:
            return False
        return owner != self._epoch

    # -- helpers used by RowContext ----------------------------------------------------------

    def _fold(self, values: list[tuple[str, Any]]) -> None:
        """Fold a finished row's (or token's) values; all or nothing, E-1015 on a bad value."""
        if not values:
            return
        new = dict(self._states)
        for name, value in values:
            try:
                new[name] = self._aggs[name].fold(new[name], value)
            except Exception as error:
                raise OrbitError(
                    E1015_VALUE_UNRECORDABLE,
                    f"aggregation {name!r} cannot take {printable(value)} "
                    f"({type(error).__name__}: {safe_text(str(error), 200)})",
                ) from None
        self._states = new

    def _finished_tokens(self, key_hash: bytes) -> set[int]:
        if key_hash not in self._attempted:
            return set()
        return row_ledger.done_token_numbers(
            self.conn, self.scope.root_run_id, self.scope.step_key, key_hash.hex()
        )

    # -- resume state ----------------------------------------------------------------------

    def load_done(self) -> DoneSet:
        """The done set of this step (also used by ``run_batches``)."""
        digests = row_ledger.load_done_digests(
            self.conn, self.scope.root_run_id, self.scope.step_key
        )
        # Streamed record by record into the set's arrays: at 10M done rows the peak is
        # the set's 160 MB plus one group, not the raw bytes and sorted copies besides.
        builder = DoneSetBuilder(digests.expected)
        for block in digests.blocks:
            builder.add(block)
        self._attempted = row_ledger.load_attempted_hashes(
            self.conn, self.scope.root_run_id, self.scope.step_key
        )
        self._legacy = row_ledger.has_legacy_rows(
            self.conn, self.scope.root_run_id, self.scope.step_key
        )
        self.conn.commit()
        return builder.build()

    def write_outcomes(self, out: _Outcomes) -> None:
        """Record a batch's row and token outcomes inside the caller's transaction: the
        rows done for the first time as one done-batch record, every other row (not done,
        or done now after an earlier attempt recorded it) as its own step_rows record."""
        scope = self.scope
        conn = self.conn
        first, rest = _split_outcomes(out, self._attempted)
        if first:
            digests, keys = out.digests, out.row_keys
            if len(first) < len(digests):
                digests = [digests[n] for n in first]
                keys = [keys[n] for n in first]
            results = [out.result_of(n) for n in first] if not out.plain else None
            left_out = row_ledger.write_done_batch(
                conn, scope.root_run_id, scope.step_key, scope.run_id, digests, keys, results
            )
            rest += [first[n] for n in left_out]
        if rest:
            row_ledger.write_row_outcomes(
                conn, scope.root_run_id, scope.step_key, scope.run_id, _row_outcomes(out, rest)
            )
        if out.tokens.key_hashes:
            row_ledger.write_token_outcomes(conn, scope.root_run_id, scope.step_key, out.tokens)

    @property
    def has_legacy_rows(self) -> bool:
        """Whether the ledger (as of the last ``load_done``) holds rows under the old key rule."""
        return self._legacy

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

        ``key`` is a column/dict key name or a function giving the row's stable key (see
        ``execution.keys`` for the one key rule). A key met again later in the same run is
        not handled again (counted in ``summary.duplicates``). Raises ``StepFailed`` (after
        committing everything before it) when a row fails in fail_fast mode, a row raises a
        retryable error, effects are held in doubt, or the database fails (E-3010); and
        ``StaleExecution`` (committing nothing more) when a newer execution owns the step.
        """
        summary = RunSummary()
        try:
            return self._run(rows, key, handler, aggregations, summary)
        except FencedOut as fenced:
            raise StaleExecution(fenced, summary) from None
        except psycopg.Error as error:
            if self._superseded():
                raise StaleExecution(self._fenced(), summary) from None
            if is_infrastructure(error):
                raise _infra_failure(error, summary, "committing a batch") from error
            raise

    def _run(
        self,
        rows: Iterable[Any],
        key: str | KeyFn,
        handler: Handler,
        aggregations: Mapping[str, Aggregation] | None,
        summary: RunSummary,
    ) -> RunSummary:
        started = time.monotonic()
        key_of: KeyFn = itemgetter(key) if isinstance(key, str) else key
        total = len(rows) if hasattr(rows, "__len__") else None  # type: ignore[arg-type]
        self._rows_total = total
        done_set = self.run_done_set = self.load_done()
        self._load_aggregations(aggregations)
        handled = self.seen_keys = HandledKeys()
        recent = handled.recent
        ctx = RowContext(self, self._aggs)
        pending_agg = ctx._pending_agg
        quarantine = self.options.on_error == "quarantine"
        reporter = _ProgressReporter(self.options, total, self._progress_cb)
        heartbeat = self._heartbeat
        conn = self.conn
        pgconn = conn.pgconn  # the executor's connection is never replaced
        flush_after_s = self.options.idle_in_transaction_timeout_s / 4
        stop: StepFailed | None = None
        seen = 0
        # Whether ctx is as _reset leaves it (across batches: it is one for the run): the
        # plain path leaves it so and sets only the row's key, the others reset it first.
        clean = True

        for chunk in _chunks(rows, self.options.batch_size):
            if heartbeat is not None and heartbeat.fenced_out:
                raise self._fenced()
            keys, digests, problems = _keys_of(chunk, key_of, key, seen)
            hashes = np.frombuffer(b"".join(digests), dtype=HASH_DTYPE)
            is_done = done_set.contains(hashes)
            if self._legacy:
                is_done |= _done_under_old_rule(done_set, chunk, key_of, problems)
            summary.skipped_already_done += int(is_done.sum())
            if len(handled.levels):
                # Met earlier in this run: a duplicate, whichever batch it was in (those of
                # the last few batches are found in ``recent``, row by row).
                again = handled.levels.contains(hashes) & ~is_done
                summary.duplicates += int(again.sum())
                is_done |= again
            pending = np.flatnonzero(~is_done).tolist()
            saw = recent.add
            out = _Outcomes()
            # A row done with nothing else to record (no result, token or aggregation
            # value) costs two appends; _Outcomes fills its other columns only if needed.
            recorded = out.digests
            add_digest, add_key = recorded.append, out.row_keys.append
            plain_done = 0
            tx_seen: float | None = None
            infra = False
            i = -1
            try:
                for i in pending:
                    digest = digests[i]
                    if digest in recent:
                        summary.duplicates += 1
                        continue
                    # pgconn's int status: conn.info builds an object and an enum per call.
                    if recorded and pgconn.transaction_status != _IDLE:
                        # A transactional effect keeps the batch transaction open while the
                        # rows after it run; commit early, well before the server's
                        # idle-in-transaction timeout would end the session (on every
                        # attempt).
                        now = time.monotonic()
                        if tx_seen is None:
                            tx_seen = now
                        elif now - tx_seen > flush_after_s:
                            summary.done += plain_done
                            self._rows_reflected += plain_done
                            plain_done = 0
                            self._commit(out, summary)
                            out = _Outcomes()
                            recorded = out.digests
                            add_digest, add_key = recorded.append, out.row_keys.append
                            tx_seen = None
                    row_key = keys[i]
                    if clean:
                        ctx.row_key = row_key
                        ctx.key_hash = digest
                    else:
                        ctx._reset(row_key, digest)
                        clean = True
                    try:
                        if problems and i in problems:
                            raise problems[i]
                        handler(chunk[i], ctx)
                        if ctx._tokens is None and ctx._result_text is None and not pending_agg:
                            status = ""  # done, and nothing else to record
                        else:
                            clean = False
                            status = "done"
                            if ctx._tokens:
                                status = _row_status_from_tokens(ctx)
                            if status == "done":
                                self._fold(pending_agg)
                    except EffectInDoubt as error:
                        clean = False
                        saw(digest)
                        summary.held += 1
                        out.add(digest, row_key, "failed", None, error.code, error.message)
                        out.add_tokens(ctx)
                        continue
                    except FencedOut:
                        raise
                    except Exception as error:
                        clean = False
                        if is_infrastructure(error):
                            if self._superseded():
                                raise self._fenced() from None  # our session was ended by it
                            # Not the row's fault: nothing about it is recorded, a rerun does
                            # it.
                            stop = _infra_failure(error, summary, f"row {row_key}")
                            infra = True
                            i -= 1
                            break
                        saw(digest)
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
                    saw(digest)
                    if not status:
                        add_digest(digest)
                        add_key(row_key)
                        plain_done += 1
                    elif status == "done":
                        summary.done += 1
                        self._rows_reflected += 1
                        out.add(digest, row_key, "done", ctx._result_text)
                        if ctx._tokens:
                            out.add_tokens(ctx)
                    elif status == "pending":
                        out.add_tokens(ctx)
                        summary.incomplete += 1
                        out.add(digest, row_key, "pending", None)
                    else:
                        out.add_tokens(ctx)
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
            finally:
                # Also when a row raises out of the loop: the counts include every row that
                # ran, as they did when each row counted itself.
                summary.done += plain_done
                self._rows_reflected += plain_done
            seen += len(chunk) if stop is None else i + 1  # rows after the stop never ran
            if infra:
                # The whole batch goes: its transactional effects must not commit without
                # their rows (and the server is likely gone anyway). A rerun redoes it.
                _rollback_quietly(self.conn)
                break
            if out.digests or self.conn.info.transaction_status != _IDLE:
                self._commit(out, summary)
            if len(recent) >= _RECENT_KEYS:
                handled.settle()
                recent = handled.recent
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
        """One transaction: fence check, row statuses, tokens, aggregation state, beat."""
        scope = self.scope
        conn = self.conn
        self.check_fence()
        self.write_outcomes(out)
        save_aggregations(
            conn, scope.root_run_id, scope.step_key, self._states, self._rows_reflected
        )
        rows_done = summary.done + summary.skipped_already_done + summary.quarantined
        beat(conn, scope, self._epoch, rows_done, self._rows_total)
        conn.commit()
        self._committed_rows = rows_done
        summary.batches_committed += 1


_IDLE = psycopg.pq.TransactionStatus.IDLE
# Keys handled in the last batches of a run stay in a set (about 100 bytes a key, so a few
# MB) before they move into SeenKeys' 16-byte levels: a batch then checks its rows against
# them with one set lookup each instead of a numpy search of every level.
_RECENT_KEYS = 1 << 16


class HandledKeys:
    """The keys a run handled so far: older ones in ``SeenKeys`` levels, the last batches'
    in a set. ``contains`` and ``len`` answer for both (the frame path filters with them)."""

    __slots__ = ("levels", "recent")

    def __init__(self) -> None:
        self.levels = SeenKeys()
        self.recent: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.levels) + len(self.recent)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A bool array: which of ``hashes`` (dtype ``S16``) were handled already."""
        n = hashes.shape[0]
        found = self.levels.contains(hashes) if len(self.levels) else np.zeros(n, dtype=bool)
        if self.recent:
            # Sliced from the raw bytes: numpy's S16 items drop trailing NUL bytes.
            raw, recent = hashes.tobytes(), self.recent
            found |= np.fromiter(
                (raw[j : j + 16] in recent for j in range(0, 16 * n, 16)), dtype=bool, count=n
            )
        return found

    def settle(self) -> None:
        """Move the recent keys into the levels."""
        if self.recent:
            self.levels.add(np.frombuffer(b"".join(self.recent), dtype=HASH_DTYPE))
            self.recent = set()


def _split_outcomes(out: _Outcomes, attempted: set[bytes]) -> tuple[list[int], list[int]]:
    """Positions in ``out`` of the rows done for the first time (one done-batch record)
    and of every other row (a step_rows record each: not done, or done now after an
    earlier attempt recorded it there)."""
    count = len(out.digests)
    again = bool(attempted) and not attempted.isdisjoint(out.digests)
    if out.plain and not again:
        return list(range(count)), []
    first: list[int] = []
    rest: list[int] = []
    for n in range(count):
        if out.status_of(n) == "done" and not (again and out.digests[n] in attempted):
            first.append(n)
        else:
            rest.append(n)
    return first, rest


def _row_outcomes(out: _Outcomes, positions: list[int]) -> row_ledger.RowOutcomes:
    """The step_rows records of these positions of ``out``."""
    return row_ledger.RowOutcomes(
        [out.digests[n].hex() for n in positions],
        [out.row_keys[n] for n in positions],
        [out.status_of(n) for n in positions],
        [out.result_of(n) for n in positions],
        [out.error_code_of(n) for n in positions],
        [out.error_message_of(n) for n in positions],
    )


def _rollback_quietly(conn: psycopg.Connection) -> None:
    try:
        conn.rollback()
    except psycopg.Error:
        pass  # a broken connection has nothing left to roll back


def _row_status_from_tokens(ctx: RowContext) -> str:
    statuses = {t.status for t in ctx._tokens or ()}
    if "failed" in statuses:
        return "failed"
    if "pending" in statuses:
        return "pending"
    return "done"


class _Outcomes:
    """Column lists of one batch (the shape the upsert takes).

    The executor's loop appends a row that is done with nothing else to record to
    ``digests`` and ``row_keys`` only; the other columns catch up (status done, no result
    or error) when a row with more is added and in ``rows()``, so read them through those.
    """

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
        self._pad()
        self.digests.append(digest)
        self.row_keys.append(row_key)
        self.statuses.append(status)
        self.results.append(result)
        self.error_codes.append(code)
        self.error_messages.append(message)

    # By position, for the batch commit. A row the loop appended to ``digests`` and
    # ``row_keys`` alone (done, nothing else to record) has no entry in the other columns.
    def status_of(self, n: int) -> str:
        return self.statuses[n] if n < len(self.statuses) else "done"

    def result_of(self, n: int) -> str | None:
        return self.results[n] if n < len(self.results) else None

    def error_code_of(self, n: int) -> str | None:
        return self.error_codes[n] if n < len(self.error_codes) else None

    def error_message_of(self, n: int) -> str | None:
        return self.error_messages[n] if n < len(self.error_messages) else None

    def add_tokens(self, ctx: RowContext) -> None:
        tokens = self.tokens
        for token in ctx._tokens or ():
            tokens.key_hashes.append(ctx.key_hash.hex())
            tokens.token_nos.append(token.no)
            tokens.statuses.append(token.status)
            tokens.results.append(token.result_text)
            tokens.error_codes.append(token.error_code)
            tokens.error_messages.append(token.error_message)

    def _pad(self) -> None:
        missing = len(self.digests) - len(self.statuses)
        if missing:
            self.statuses += ["done"] * missing
            self.results += [None] * missing
            self.error_codes += [None] * missing
            self.error_messages += [None] * missing

    def rows(self) -> row_ledger.RowOutcomes:
        self._pad()
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
