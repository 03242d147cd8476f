"""The chunked DataFrame path of ``run_frames``, on top of ``RowExecutor.run``.

``RowExecutor.run`` takes its rows ``batch_size`` at a time and commits each batch. The
rows handed to it here are one light item per frame row, produced chunk by chunk: when the
executor asks for the first item of a chunk (after the previous batch committed), the
chunk's rows that are neither done nor already handled in this run go to the user's frame
handler as one DataFrame; its per-row outcomes ride on the items, and the per-row handler
only applies them (emit, aggregate, raise the row's error). So a chunk is exactly one batch,
one transaction: outcomes, aggregation states and the handler's writes through
``fctx.conn`` commit together.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import psycopg

from orbit_pipelines.errors import (
    E4004_ROW_FAILED,
    ErrorCode,
    OrbitError,
    concerns_only_its_row,
    is_retryable,
    lookup,
)
from orbit_pipelines.execution import RowContext
from orbit_pipelines.execution.done_set import HASH_DTYPE
from orbit_pipelines.execution.executor import PreparedKey
from orbit_pipelines.execution.keys import canonical_key

if TYPE_CHECKING:
    from orbit_pipelines.execution import RowExecutor

ERROR_COLUMN = "error"
MESSAGE_COLUMN = "message"
RESULT_COLUMN = "result"


@dataclass
class FrameContext:
    """What a frame handler gets besides its chunk.

    ``conn``: the psycopg connection of the batch transaction. Writes made through it
    commit in the same transaction as the chunk's row outcomes (so they happen once); do not
    commit or roll back yourself. When the chunk stops the step (the handler raised, or an
    outcome is an error that is not quarantined) its writes are rolled back. ``chunk_no`` counts chunks handed to the handler in this
    run, from 0. ``root_run_id`` / ``step_key`` say which step of which run group this is.
    """

    _executor: RowExecutor
    chunk_no: int
    root_run_id: str
    step_key: str

    @property
    def conn(self) -> psycopg.Connection:
        """The batch transaction's connection (checks first that this execution still owns
        the step, so a stale worker writes nothing)."""
        self._executor.open_batch()
        return self._executor.conn


FrameHandler = Callable[[pd.DataFrame, FrameContext], "pd.Series | pd.DataFrame | None"]
"""``handler(chunk, fctx)``: up to ``batch_size`` pending rows; returns their outcomes."""


class _Item:
    """One frame row as the executor sees it: its key and what the frame handler said."""

    __slots__ = ("aggs", "error", "key", "result")

    def __init__(self, key: Any) -> None:
        self.key = key
        self.error: BaseException | None = None
        self.result: Any = None
        self.aggs: list[tuple[str, Any]] | None = None

    def apply(self, ctx: RowContext) -> None:
        if self.error is not None:
            raise self.error
        if self.result is not None:
            ctx.emit(self.result)
        for name, value in self.aggs or ():
            ctx.agg[name].add(value)


class _FrameRows:
    """The items of a frame, chunk by chunk; has a length so progress shows a percentage."""

    def __init__(self, items: Iterator[_Item], length: int) -> None:
        self._items = items
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[_Item]:
        return self._items


def frame_rows(
    ex: RowExecutor,
    frame: pd.DataFrame,
    key: str,
    handler: FrameHandler,
    agg_names: Sequence[str],
) -> _FrameRows:
    """The rows to give ``ex.run`` for ``run_frames`` (see the module docstring)."""
    return _FrameRows(_items(ex, frame, key, handler, agg_names), len(frame))


def _chunk_keys(values: pd.Series) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """The keys of a chunk for the executor, their digests and which are valid.

    One pass over the key column: an integer column is rendered to text by numpy, a
    column of plain strings is hashed as it is; anything else goes through the one key rule
    row by row. Valid keys become ``PreparedKey`` (the executor does not hash them again);
    a bad key stays the raw value, so the executor fails that row with its own code
    (E-1013/E-1014), and its digest slot holds zeros and is never used (``valid`` False).
    """
    n = len(values)
    array = values.to_numpy()
    digests: list[bytes]
    if array.dtype.kind in "iu":
        texts = array.astype(str).tolist()
        digests = [blake2b(f"\x00i:{t}".encode(), digest_size=16).digest() for t in texts]
        keys: list[Any] = list(map(PreparedKey, texts, digests))
        return keys, np.frombuffer(b"".join(digests), dtype=HASH_DTYPE), np.ones(n, dtype=bool)
    raw = array.tolist()
    keys = []
    digests = []
    valid = np.ones(n, dtype=bool)
    for i, value in enumerate(raw):
        if type(value) is str and value and "\x00" not in value:
            try:
                digest = blake2b(value.encode(), digest_size=16).digest()
            except UnicodeEncodeError:
                pass  # a lone surrogate: the key rule says why
            else:
                keys.append(PreparedKey(value, digest))
                digests.append(digest)
                continue
        try:
            rk = canonical_key(value)
        except Exception:
            keys.append(value)
            digests.append(_NO_DIGEST)
            valid[i] = False
            continue
        keys.append(PreparedKey(rk.display, rk.digest))
        digests.append(rk.digest)
    return keys, np.frombuffer(b"".join(digests), dtype=HASH_DTYPE), valid


_NO_DIGEST = bytes(16)


def _first_pending(digests: np.ndarray, pending: np.ndarray) -> np.ndarray:
    """Positions of ``pending`` (a bool mask) keeping only a key's first place in the chunk
    (a key twice in one chunk is handled once, like one met again in a later chunk)."""
    at = np.flatnonzero(pending)
    if at.shape[0] < 2:
        return at
    _, first = np.unique(digests[at], return_index=True)
    if first.shape[0] == at.shape[0]:
        return at
    return at[np.sort(first)]


def _items(
    ex: RowExecutor,
    frame: pd.DataFrame,
    key: str,
    handler: FrameHandler,
    agg_names: Sequence[str],
) -> Iterator[_Item]:
    size = ex.options.batch_size
    # The executor's own done set and the keys it handled so far in this run (16 bytes a
    # key in sorted numpy levels, no Python object per row): this generator runs inside
    # ``ex.run``, and a chunk is pulled only after the previous batch was recorded there.
    done_set = ex.run_done_set if ex.run_done_set is not None else ex.load_done()
    prepared = not ex.has_legacy_rows  # the old-rule check needs the raw key values
    keys = frame[key]
    chunk_no = 0
    for start in range(0, len(frame), size):
        column = keys.iloc[start : start + size]
        row_keys, digests, valid = _chunk_keys(column)
        pending_mask = valid & ~done_set.contains(digests)
        seen = ex.seen_keys
        if len(seen):
            pending_mask &= ~seen.contains(digests)
        pending = _first_pending(digests, pending_mask)
        items = [_Item(k) for k in (row_keys if prepared else column.tolist())]
        if pending.shape[0]:
            chunk = frame.iloc[start : start + size].iloc[pending]
            fctx = FrameContext(ex, chunk_no, ex.scope.root_run_id, ex.scope.step_key)
            chunk_no += 1
            chosen = [items[n] for n in pending.tolist()]
            try:
                outcome = handler(chunk, fctx)
                _attach(outcome, chunk, chosen, agg_names)
                stop = _stopping_error(chosen, quarantine=ex.options.on_error == "quarantine")
            except Exception as error:
                stop = error  # as if each pending row's handler had raised it
            if stop is not None:
                # The chunk will not commit as a whole: drop what the handler wrote through
                # fctx.conn (nothing else is in this transaction yet) and stop at its first
                # row, so a rerun hands the handler the same rows with nothing written twice.
                _rollback(ex)
                for item in chosen:
                    item.error = stop
        yield from items


def _stopping_error(items: list[_Item], *, quarantine: bool) -> BaseException | None:
    """The first row error of the chunk that stops the step instead of being quarantined."""
    for item in items:
        error = item.error
        if error is None:
            continue
        code = error.code if isinstance(error, OrbitError) else E4004_ROW_FAILED.code
        if not quarantine or not concerns_only_its_row(code):
            return error
    return None


def _rollback(ex: RowExecutor) -> None:
    conn = ex.conn
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        conn.rollback()
    except psycopg.Error:
        pass  # the server is gone: nothing of the transaction committed anyway


def _attach(
    outcome: Any, chunk: pd.DataFrame, items: list[_Item], agg_names: Sequence[str]
) -> None:
    if outcome is None:
        return
    if isinstance(outcome, pd.Series):
        outcome = outcome.to_frame(ERROR_COLUMN)
    if not isinstance(outcome, pd.DataFrame):
        raise TypeError(
            f"a frame handler returns None, a Series or a DataFrame, not {type(outcome).__name__}"
        )
    if not outcome.index.equals(chunk.index):
        outcome = outcome.reindex(chunk.index)
    columns = set(outcome.columns)
    errors = outcome[ERROR_COLUMN].tolist() if ERROR_COLUMN in columns else None
    messages = outcome[MESSAGE_COLUMN].tolist() if MESSAGE_COLUMN in columns else None
    results = outcome[RESULT_COLUMN].tolist() if RESULT_COLUMN in columns else None
    agg_columns = [(n, outcome[n].tolist()) for n in agg_names if n in columns]
    for i, item in enumerate(items):
        if errors is not None:
            message = messages[i] if messages is not None else None
            item.error = _row_error(errors[i], message)
            if item.error is not None:
                continue
        if results is not None and not _missing(results[i]):
            item.result = _plain(results[i])
        if agg_columns:
            item.aggs = [
                (name, _plain(values[i])) for name, values in agg_columns if not _missing(values[i])
            ]


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False  # a list or dict: present


def _plain(value: Any) -> Any:
    # numpy scalars to Python ones, so results and aggregation states stay JSON-able.
    return value.item() if isinstance(value, np.generic) else value


def _row_error(flag: Any, message: Any) -> OrbitError | None:
    """The row's error from its ``error`` cell: True/None/NaN ok, False failed, a code."""
    if _missing(flag) or flag is True or (isinstance(flag, np.bool_) and bool(flag)):
        return None
    text = message if isinstance(message, str) and message else None
    if flag is False or (isinstance(flag, np.bool_) and not bool(flag)):
        return OrbitError(E4004_ROW_FAILED, text or "the frame handler marked the row failed")
    code, _, rest = str(flag).partition(" ")
    if not re.fullmatch(r"E-\d{4}", code):
        return OrbitError(E4004_ROW_FAILED, f"the frame handler returned {flag!r} as the error")
    error = lookup(code) or ErrorCode(code, "error code of the frame handler", is_retryable(code))
    return OrbitError(error, text or rest or error.title)
