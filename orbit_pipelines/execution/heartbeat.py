"""Heartbeats: written in every batch transaction, and by a thread while a slow row runs."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

import psycopg

from orbit_pipelines.execution.scope import RunScope
from orbit_pipelines.store.named_sql import load_sql


def beat(conn: psycopg.Connection, scope: RunScope, rows_done: int, rows_total: int | None) -> None:
    """Upsert this process's beat for the step (inside the caller's transaction, if any)."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("heartbeat_beat"),
            {
                "run_id": scope.run_id,
                "step_key": scope.step_key,
                "root_run_id": scope.root_run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "rows_done": rows_done,
                "rows_total": rows_total,
            },
        )


class HeartbeatThread:
    """Beats every ``every_s`` on its own autocommit connection until stopped.

    ``progress()`` returns (rows_done, rows_total) as the executor last committed them, so a
    slow row shows a fresh ``beat_at`` beside an unmoving ``progress_at``.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        scope: RunScope,
        progress: Callable[[], tuple[int, int | None]],
        every_s: float,
    ) -> None:
        self._connect = connect
        self._scope = scope
        self._progress = progress
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"orbit-heartbeat-{scope.step_key}", daemon=True
        )

    def start(self) -> None:
        """Start beating."""
        self._thread.start()

    def stop(self) -> None:
        """Stop and wait for the thread (it finishes its current beat)."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        conn = self._connect()
        try:
            while not self._stop.wait(self._every_s):
                done, total = self._progress()
                try:
                    beat(conn, self._scope, done, total)
                except psycopg.Error:
                    # A missed beat is not worth killing the step for; the next one retries.
                    if conn.closed:
                        conn = self._connect()
        finally:
            conn.close()
