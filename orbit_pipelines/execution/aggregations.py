"""Named aggregation state: a JSON-able value folded over the rows that finished.

A handler does not mutate the state directly: ``ctx.agg["totals"].add(v)`` records ``v``
for the current row, and the executor folds it in only when the row is done. A row that
is quarantined or fails therefore leaves the state untouched, and the state saved with a
batch reflects exactly the rows that batch marks done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Aggregation:
    """``initial()`` makes the starting state; ``fold(state, value)`` returns the next one.

    The state must survive ``json.dumps``/``json.loads`` unchanged in meaning.
    """

    initial: Callable[[], Any]
    fold: Callable[[Any, Any], Any]


def _add(state: Any, value: Any) -> Any:
    return state + value


def _count(state: Any, value: Any) -> Any:
    return state + 1


def _append(state: Any, value: Any) -> Any:
    state.append(value)
    return state


def _keyed_sum(state: Any, value: Any) -> Any:
    group, amount = value
    state[str(group)] = state.get(str(group), 0) + amount
    return state


def Sum(start: float = 0) -> Aggregation:
    """Sum of the values added."""
    return Aggregation(initial=lambda: start, fold=_add)


def Count() -> Aggregation:
    """Number of values added."""
    return Aggregation(initial=lambda: 0, fold=_count)


def Buffer() -> Aggregation:
    """The values added, in order (keep them small: the whole list is saved every batch)."""
    return Aggregation(initial=list, fold=_append)


def SumBy() -> Aggregation:
    """Sums per group: add ``(group, amount)``."""
    return Aggregation(initial=dict, fold=_keyed_sum)


class AggHandle:
    """What ``ctx.agg[name]`` returns: records values for the current row."""

    __slots__ = ("_name", "_pending")

    def __init__(self, name: str, pending: list[tuple[str, Any]]) -> None:
        self._name = name
        self._pending = pending

    def add(self, value: Any = 1) -> None:
        """Fold ``value`` into this aggregation when the current row is done."""
        self._pending.append((self._name, value))

    update = add
