"""The executor's second connection, in autocommit, shared by effects and heartbeats.

A row step holds two connections: the batch transaction and this one. Effect intents
must be durable before the call, independent of the batch; heartbeats must go out while a
slow row runs. Both are short statements, so one connection behind a lock serves both
(the lock is never held while an effect itself runs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg


class SideConnection:
    """Opened on first use; reopened when the server dropped it."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect
        self._conn: psycopg.Connection | None = None
        self._lock = threading.RLock()

    @contextmanager
    def use(self) -> Iterator[psycopg.Connection]:
        """The connection, for this thread alone until the block ends."""
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            yield self._conn

    def close(self) -> None:
        """Close it (idempotent)."""
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()
            self._conn = None
