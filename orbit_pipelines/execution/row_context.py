"""What a row handler gets: ``ctx.once``, ``ctx.fork``, ``ctx.agg[name]``, ``ctx.emit``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from orbit_pipelines.errors import E1015_VALUE_UNRECORDABLE, OrbitError
from orbit_pipelines.execution.aggregations import AggHandle
from orbit_pipelines.execution.effects import Receiver, ReconcileFn
from orbit_pipelines.store import value_codec

if TYPE_CHECKING:
    from orbit_pipelines.execution.executor import RowExecutor


def _encoded(result: Any) -> str | None:
    # Encoded when emitted, inside the handler: a value that cannot be recorded fails its
    # own row (E-1015) instead of the whole batch's commit.
    if result is None:
        return None
    try:
        return value_codec.encode(result)
    except (value_codec.UnrecordableValue, ValueError) as error:
        raise OrbitError(
            E1015_VALUE_UNRECORDABLE, f"emitted result cannot be recorded: {error}"
        ) from None


class Token:
    """One piece of a forked row. Use it as ``with token:``: leaving the block normally
    marks it done, an exception marks it failed (and propagates).

    Aggregation values added inside the block are folded when the token is done, so a
    rerun of the row, which skips done tokens, neither loses nor repeats them.
    """

    __slots__ = (
        "_ctx",
        "_mark",
        "error_code",
        "error_message",
        "item",
        "no",
        "result",
        "result_text",
        "status",
    )

    def __init__(self, ctx: RowContext, no: int, item: Any) -> None:
        self._ctx = ctx
        self.no = no
        self.item = item
        self.status = "pending"
        self.result: Any = None
        self.result_text: str | None = None
        self.error_code: str | None = None
        self.error_message: str | None = None
        self._mark = 0

    def emit(self, result: Any) -> None:
        """Record a result for this token (JSON types, or what ``store.value_codec`` keeps)."""
        self.result_text = _encoded(result)
        self.result = result

    def __enter__(self) -> Token:
        self._mark = len(self._ctx._pending_agg)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pending = self._ctx._pending_agg
        if exc is None:
            try:
                self._ctx._executor._fold(pending[self._mark :])
            except OrbitError as error:
                # Done only once its values are folded: a value that cannot be (E-1015)
                # fails the token, and its row with it.
                self.status = "failed"
                self.error_code, self.error_message = error.code, error.message
                del pending[self._mark :]
                raise
            self.status = "done"
        elif isinstance(exc, Exception):
            from orbit_pipelines.execution.executor import error_fields

            self.status = "failed"
            self.error_code, self.error_message = error_fields(exc)
        del pending[self._mark :]


class RowContext:
    """Per-row helper handed to the handler; one instance is reused row after row."""

    __slots__ = (
        "_executor",
        "_pending_agg",
        "_result",
        "_result_text",
        "_tokens",
        "agg",
        "key_hash",
        "row_key",
    )

    def __init__(self, executor: RowExecutor, agg_names: Iterable[str]) -> None:
        self._executor = executor
        self._pending_agg: list[tuple[str, Any]] = []
        self.agg: dict[str, AggHandle] = {n: AggHandle(n, self._pending_agg) for n in agg_names}
        self.row_key = ""
        self.key_hash = b""
        self._result: Any = None
        self._result_text: str | None = None
        self._tokens: list[Token] | None = None

    def _reset(self, row_key: str, key_hash: bytes) -> None:
        self.row_key = row_key
        self.key_hash = key_hash
        self._result = None
        self._result_text = None
        self._tokens = None
        self._pending_agg.clear()

    def emit(self, result: Any) -> None:
        """Record a result for this row, stored in the ledger (JSON types, or what
        ``store.value_codec`` keeps); a value it cannot keep fails the row with E-1015."""
        self._result_text = _encoded(result)
        self._result = result

    def once(
        self,
        key: str,
        fn: Callable[..., Any],
        *,
        receiver: Receiver = "idempotent",
        reconcile: ReconcileFn | None = None,
    ) -> Any:
        """Run the side effect ``fn`` at most once for ``key`` (unique within the step).

        ``fn`` is called as ``fn(idempotency_key)`` for an idempotent receiver (or ``fn()``
        when it takes no argument), ``fn(conn)`` (a psycopg connection inside the batch
        transaction) for a transactional one, and ``fn()`` for an unsafe one. The key
        belongs to this row: another row using it fails with E-4007. See
        ``execution.effects``.
        """
        return self._executor._effects.once(
            key,
            fn,
            receiver=receiver,
            row_key=self.row_key,
            row_hash=self.key_hash,
            reconcile=reconcile,
        )

    def fork(self, items: int | Iterable[Any]) -> list[Token]:
        """Split this row into tokens (``n`` or one per item); the row is done only when
        every token is. Tokens an earlier attempt finished are not returned again."""
        listed = [None] * items if isinstance(items, int) else list(items)
        finished = self._executor._finished_tokens(self.key_hash)
        tokens = [Token(self, no, item) for no, item in enumerate(listed) if no not in finished]
        self._tokens = tokens
        return tokens
