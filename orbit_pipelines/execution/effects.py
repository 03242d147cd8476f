"""``once(key, fn)``: run a side effect at most once per key, backed by the effect ledger.

Three kinds of receiver:

- ``"idempotent"`` (the default) honours an idempotency key: ``fn(idempotency_key)``, or
  ``fn()`` when ``fn`` takes no argument; the key is the full ``root/step/key``
  (``full_key``). Only the outcome is recorded (one write, no intent): an attempt cut short
  by a crash is simply repeated with the same key, and the receiver drops the duplicate.
  An execution that was fenced out is still stopped before the call.
- ``"transactional"`` lives in the same Postgres database: ``fn(conn)`` runs on the
  executor's connection inside the batch transaction, under a savepoint. The effect, its
  ledger row and the row status commit together, in the batch's one commit: exactly
  once, nothing to reconcile.
- ``"unsafe"`` honours nothing: ``fn()``. The intent is committed before the call; an
  intent found after a crash means the outcome is unknown. The key is marked ``in_doubt``
  and the row is held (E-4002) until a ``reconcile`` callback or a person
  (``store.effect_ledger.resolve_effect``) settles it. It is never blindly repeated.

An effect key belongs to the row that first used it: another row using it fails with
E-4007 naming both. Results are recorded with ``store.value_codec`` (Decimal, datetime,
numpy scalars, NaN ... come back as they went in); a psycopg cursor (what
``conn.execute(...)`` returns) counts as no result; any other result it cannot record is
E-4008: the effect is recorded as happened (never repeated) and its row fails.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from orbit_pipelines.errors import (
    E4002_EFFECT_IN_DOUBT,
    E4004_ROW_FAILED,
    E4007_EFFECT_KEY_REUSED,
    E4008_EFFECT_RESULT_UNRECORDABLE,
    OrbitError,
)
from orbit_pipelines.execution.scope import RunScope
from orbit_pipelines.execution.side_connection import SideConnection
from orbit_pipelines.store import effect_ledger, value_codec

Receiver = Literal["idempotent", "transactional", "unsafe"]


class EffectInDoubt(OrbitError):
    """An unsafe effect may or may not have happened; its row is held for reconciliation."""

    def __init__(self, effect_key: str) -> None:
        super().__init__(
            E4002_EFFECT_IN_DOUBT,
            f"effect {effect_key} may have happened before a crash; holding its row",
            hint="check the receiver, then `resolve_effect(key, 'succeeded'|'failed')` "
            "or pass reconcile= to once()",
        )
        self.effect_key = effect_key


@dataclass(frozen=True)
class Reconciled:
    """What a reconcile callback found at the receiver."""

    happened: bool
    result: Any = None

    @classmethod
    def succeeded(cls, result: Any = None) -> Reconciled:
        """The effect did happen (``result`` is recorded and returned)."""
        return cls(True, result)

    @classmethod
    def failed(cls) -> Reconciled:
        """The effect did not happen: it will be performed now."""
        return cls(False)


ReconcileFn = Callable[[str], Reconciled | None]


def _error_fields(error: BaseException) -> tuple[str, str]:
    if isinstance(error, OrbitError):
        return error.code, error.message
    return E4004_ROW_FAILED.code, f"{type(error).__name__}: {error}"


def _takes_no_argument(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: call it as documented
        return False
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return not positional


def _checked_result(effect_key: str, result: Any) -> Any:
    if isinstance(result, psycopg.Cursor):
        # `lambda conn: conn.execute("INSERT ...")` returns its cursor: not a result anyone
        # means to keep, so it is no result (refusing it would fail the row with E-4008).
        return None
    try:
        value_codec.encode(result)
    except (value_codec.UnrecordableValue, ValueError) as error:
        raise OrbitError(
            E4008_EFFECT_RESULT_UNRECORDABLE,
            f"effect {effect_key} returned a value that cannot be recorded: {error}",
            hint="return JSON types, Decimal, datetime, UUID, bytes, tuples or numpy scalars",
        ) from None
    return result


class EffectGuard:
    """Runs effects for one step; uses the executor's two connections."""

    def __init__(
        self,
        scope: RunScope,
        tx_conn: psycopg.Connection,
        side: SideConnection,
        epoch: int,
        open_batch: Callable[[], None],
    ) -> None:
        self._scope = scope
        self._tx = tx_conn
        self._side = side
        self._epoch = epoch
        self._open_batch = open_batch
        self._scope_id: int | None = None

    def full_key(self, key: str) -> str:
        """Keys are scoped to the logical run and step, so two runs never share an effect."""
        return f"{self._scope.root_run_id}/{self._scope.step_key}/{key}"

    def _ledger_scope(self) -> int:
        # On the autocommit side connection: created inside a batch that rolls back, the id
        # would vanish while this guard still used it.
        if self._scope_id is None:
            with self._side.use() as conn:
                self._scope_id = effect_ledger.scope_id(
                    conn, self._scope.root_run_id, self._scope.step_key, self._scope.run_id
                )
        return self._scope_id

    def once(
        self,
        key: str,
        fn: Callable[..., Any],
        *,
        receiver: Receiver,
        row_key: str | None,
        row_hash: bytes | None,
        reconcile: ReconcileFn | None = None,
    ) -> Any:
        """Run ``fn`` unless the ledger says it already happened; return its result."""
        effect_key = self.full_key(key)
        if receiver == "transactional":
            return self._transactional(effect_key, fn, row_key, row_hash)
        if receiver not in ("idempotent", "unsafe"):
            raise ValueError(f"unknown receiver {receiver!r}")
        if receiver == "unsafe" or _takes_no_argument(fn):
            call: Callable[[], Any] = fn
        else:

            def call() -> Any:
                return fn(effect_key)

        scope_id = self._ledger_scope()
        if receiver == "idempotent":
            with self._side.use() as conn:
                record = effect_ledger.lookup(
                    conn,
                    effect_key=effect_key,
                    root_run_id=self._scope.root_run_id,
                    step_key=self._scope.step_key,
                    epoch=self._epoch,
                )
            self._check_row(effect_key, record, row_key, row_hash)
            if record is not None and record.status == "succeeded":
                return self._replayed(effect_key, record)
            return self._call(effect_key, call, _Outcome(scope_id, row_key, row_hash))
        with self._side.use() as conn:
            record = self._claim(conn, effect_key, receiver, row_key, row_hash, "intent")
            if record is not None:
                if record.status == "succeeded":
                    return self._replayed(effect_key, record)
                if record.status in ("intent", "in_doubt"):
                    return self._in_doubt(conn, effect_key, key, call, reconcile, row_key)
                self._retry(conn, effect_key, "unsafe", row_key, "intent")
        return self._call(effect_key, call, None)

    @staticmethod
    def _replayed(effect_key: str, record: effect_ledger.EffectRecord) -> Any:
        if record.error_code == E4008_EFFECT_RESULT_UNRECORDABLE.code:
            raise OrbitError(
                E4008_EFFECT_RESULT_UNRECORDABLE,
                f"effect {effect_key} happened but its result could not be "
                "recorded, so it cannot be returned again",
            )
        return record.result

    def _claim(
        self,
        conn: psycopg.Connection,
        effect_key: str,
        receiver: str,
        row_key: str | None,
        row_hash: bytes | None,
        status: str,
    ) -> effect_ledger.EffectRecord | None:
        record = effect_ledger.claim(
            conn,
            effect_key=effect_key,
            scope=self._ledger_scope(),
            root_run_id=self._scope.root_run_id,
            step_key=self._scope.step_key,
            row_key=row_key,
            row_hash=row_hash,
            receiver=receiver,
            status=status,
            epoch=self._epoch,
        )
        self._check_row(effect_key, record, row_key, row_hash)
        return record

    @staticmethod
    def _check_row(
        effect_key: str,
        record: effect_ledger.EffectRecord | None,
        row_key: str | None,
        row_hash: bytes | None,
    ) -> None:
        tag = effect_ledger.row_tag(row_hash)
        if record is None or tag is None or record.row_tag is None or record.row_tag == tag:
            return
        # A plain success keeps no row key text: the other row is named when it is known.
        first = f"row {record.row_key!r}" if record.row_key is not None else "another row"
        raise OrbitError(
            E4007_EFFECT_KEY_REUSED,
            f"effect key {key_of(effect_key)!r} of row {row_key!r} was first used by "
            f"{first}; each row needs its own effect keys",
            hint="build the key from the row's own key, e.g. f'charge:{row_key}'",
        )

    def _retry(
        self,
        conn: psycopg.Connection,
        effect_key: str,
        receiver: str,
        row_key: str | None,
        status: str,
    ) -> None:
        effect_ledger.retry(
            conn,
            effect_key=effect_key,
            scope=self._ledger_scope(),
            row_key=row_key,
            receiver=receiver,
            status=status,
            root_run_id=self._scope.root_run_id,
            step_key=self._scope.step_key,
            epoch=self._epoch,
        )

    def _settle(
        self,
        effect_key: str,
        outcome: _Outcome | None,
        status: str,
        *,
        result: Any = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Record an attempt's outcome: ``outcome`` set (idempotent) inserts it, else the
        recorded intent is updated."""
        with self._side.use() as conn:
            if outcome is None:
                effect_ledger.finish(
                    conn,
                    effect_key=effect_key,
                    status=status,
                    result=result,
                    error_code=error_code,
                    error_message=error_message,
                )
            else:
                effect_ledger.record(
                    conn,
                    effect_key=effect_key,
                    scope=outcome.scope_id,
                    row_key=outcome.row_key,
                    row_hash=outcome.row_hash,
                    receiver="idempotent",
                    status=status,
                    result=result,
                    error_code=error_code,
                    error_message=error_message,
                )

    def _call(self, effect_key: str, call: Callable[[], Any], outcome: _Outcome | None) -> Any:
        try:
            result = call()
        except Exception as error:
            code, message = _error_fields(error)
            self._settle(
                effect_key,
                outcome,
                "failed",
                error_code=code,
                error_message=value_codec.safe_text(message),
            )
            raise
        try:
            result = _checked_result(effect_key, result)
        except OrbitError:
            # It happened; what it returned cannot be kept. Recorded as succeeded so it is
            # never repeated; the row fails with E-4008 and a replay fails the same way.
            self._settle(
                effect_key,
                outcome,
                "succeeded",
                error_code=E4008_EFFECT_RESULT_UNRECORDABLE.code,
                error_message="result could not be recorded",
            )
            raise
        self._settle(effect_key, outcome, "succeeded", result=result)
        return result

    def _in_doubt(
        self,
        conn: psycopg.Connection,
        effect_key: str,
        key: str,
        call: Callable[[], Any],
        reconcile: ReconcileFn | None,
        row_key: str | None,
    ) -> Any:
        effect_ledger.finish(conn, effect_key=effect_key, status="in_doubt")
        found = reconcile(key) if reconcile is not None else None
        if found is None:
            raise EffectInDoubt(effect_key)
        if found.happened:
            effect_ledger.finish(
                conn,
                effect_key=effect_key,
                status="succeeded",
                result=found.result,
                resolved_by="reconcile",
            )
            return found.result
        self._retry(conn, effect_key, "unsafe", row_key, "intent")
        return self._call(effect_key, call, None)

    def _transactional(
        self,
        effect_key: str,
        fn: Callable[[psycopg.Connection], Any],
        row_key: str | None,
        row_hash: bytes | None,
    ) -> Any:
        # The scope id first, on the side connection (durable whatever the batch does).
        self._ledger_scope()
        # The batch transaction must already be open: on an idle connection psycopg's
        # transaction() is a BEGIN ... COMMIT of its own, and the effect would commit
        # before (and without) its row. Opened, it is a savepoint inside the batch.
        self._open_batch()
        with self._tx.transaction():
            record = self._claim(
                self._tx, effect_key, "transactional", row_key, row_hash, "succeeded"
            )
            if record is not None and record.status == "succeeded":
                return record.result
            if record is not None:
                self._retry(self._tx, effect_key, "transactional", row_key, "succeeded")
            result = _checked_result(effect_key, fn(self._tx))
            if result is not None:
                effect_ledger.finish(
                    self._tx, effect_key=effect_key, status="succeeded", result=result
                )
            return result


@dataclass(frozen=True)
class _Outcome:
    """What an effect without a recorded intent needs to record its outcome."""

    scope_id: int
    row_key: str | None
    row_hash: bytes | None


def key_of(effect_key: str) -> str:
    """The user's part of a full effect key (``root/step/key`` -> ``key``)."""
    return effect_key.split("/", 2)[-1]
