"""``once(key, fn)``: run a side effect at most once per key, backed by the effect ledger.

Three kinds of receiver:

- ``"idempotent"`` honours an idempotency key: ``fn(idempotency_key)``. The intent is
  recorded first; an attempt cut short by a crash is simply repeated with the same key,
  and the receiver drops the duplicate.
- ``"transactional"`` lives in the same Postgres database: ``fn(conn)`` runs on the
  executor's connection inside the batch transaction, under a savepoint. The effect, its
  ledger row and the row status commit together: exactly once, nothing to reconcile.
- ``"unsafe"`` honours nothing: ``fn()``. The intent is committed before the call; an
  intent found after a crash means the outcome is unknown. The key is marked ``in_doubt``
  and the row is held (E-4002) until a ``reconcile`` callback or a person
  (``store.effect_ledger.resolve_effect``) settles it. It is never blindly repeated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from orbit_pipelines.errors import E4002_EFFECT_IN_DOUBT, E4004_ROW_FAILED, OrbitError
from orbit_pipelines.execution.scope import RunScope
from orbit_pipelines.store import effect_ledger

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


class EffectGuard:
    """Runs effects for one step; holds the executor's two connections."""

    def __init__(
        self,
        scope: RunScope,
        tx_conn: psycopg.Connection,
        side_conn: Callable[[], psycopg.Connection],
    ) -> None:
        self._scope = scope
        self._tx = tx_conn
        self._side = side_conn

    def full_key(self, key: str) -> str:
        """Keys are scoped to the logical run and step, so two runs never share an effect."""
        return f"{self._scope.root_run_id}/{self._scope.step_key}/{key}"

    def once(
        self,
        key: str,
        fn: Callable[..., Any],
        *,
        receiver: Receiver,
        row_key: str | None,
        reconcile: ReconcileFn | None = None,
    ) -> Any:
        """Run ``fn`` unless the ledger says it already happened; return its result."""
        effect_key = self.full_key(key)
        if receiver == "transactional":
            return self._transactional(effect_key, fn, row_key)
        if receiver not in ("idempotent", "unsafe"):
            raise ValueError(f"unknown receiver {receiver!r}")
        conn = self._side()
        record = self._claim(conn, effect_key, receiver, row_key, "intent")
        if record is not None:
            if record.status == "succeeded":
                return record.result
            if record.status in ("intent", "in_doubt") and receiver == "unsafe":
                return self._in_doubt(conn, effect_key, key, fn, reconcile)
            effect_ledger.retry(conn, effect_key=effect_key, status="intent", run_id=self._run_id)
        return self._call(
            conn, effect_key, lambda: fn(effect_key) if receiver == "idempotent" else fn()
        )

    @property
    def _run_id(self) -> str:
        return self._scope.run_id

    def _claim(
        self,
        conn: psycopg.Connection,
        effect_key: str,
        receiver: str,
        row_key: str | None,
        status: str,
    ) -> effect_ledger.EffectRecord | None:
        return effect_ledger.claim(
            conn,
            effect_key=effect_key,
            root_run_id=self._scope.root_run_id,
            step_key=self._scope.step_key,
            row_key=row_key,
            receiver=receiver,
            status=status,
            run_id=self._run_id,
        )

    def _call(self, conn: psycopg.Connection, effect_key: str, call: Callable[[], Any]) -> Any:
        try:
            result = call()
        except Exception as error:
            code, message = _error_fields(error)
            effect_ledger.finish(
                conn, effect_key=effect_key, status="failed", error_code=code, error_message=message
            )
            raise
        effect_ledger.finish(conn, effect_key=effect_key, status="succeeded", result=result)
        return result

    def _in_doubt(
        self,
        conn: psycopg.Connection,
        effect_key: str,
        key: str,
        fn: Callable[..., Any],
        reconcile: ReconcileFn | None,
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
        effect_ledger.retry(conn, effect_key=effect_key, status="intent", run_id=self._run_id)
        return self._call(conn, effect_key, fn)

    def _transactional(
        self, effect_key: str, fn: Callable[[psycopg.Connection], Any], row_key: str | None
    ) -> Any:
        # A savepoint: if fn fails, its writes and the ledger row go, the batch stays usable.
        # The claim records 'succeeded' up front: inside the savepoint it only survives if
        # fn does, which saves a round trip per effect on the hot path.
        with self._tx.transaction():
            record = self._claim(self._tx, effect_key, "transactional", row_key, "succeeded")
            if record is not None and record.status == "succeeded":
                return record.result
            if record is not None:
                effect_ledger.retry(
                    self._tx, effect_key=effect_key, status="succeeded", run_id=self._run_id
                )
            result = fn(self._tx)
            if result is not None:
                effect_ledger.finish(
                    self._tx, effect_key=effect_key, status="succeeded", result=result
                )
            return result
