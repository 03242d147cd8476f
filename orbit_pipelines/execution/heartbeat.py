"""Heartbeats: written in every batch transaction, and by a thread while a slow row runs."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

import psycopg

from orbit_pipelines.execution.scope import RunScope
from orbit_pipelines.execution.side_connection import SideConnection
from orbit_pipelines.store.named_sql import load_sql


def beat(
    conn: psycopg.Connection,
    scope: RunScope,
    epoch: int,
    rows_done: int,
    rows_total: int | None,
) -> bool:
    """Upsert this process's beat for the step (inside the caller's transaction, if any).

    False when nothing was written because a newer execution owns the step.
    """
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
                "epoch": epoch,
            },
        )
        return cur.rowcount == 1


class HeartbeatThread:
    """Beats every ``every_s`` on the executor's side connection until stopped.

    ``progress()`` returns (rows_done, rows_total) as the executor last committed them, so a
    slow row shows a fresh ``beat_at`` beside an unmoving ``progress_at``. ``fenced_out``
    turns true when a beat finds that a newer execution owns the step; the thread then
    stops beating and the executor stops at its next row.
    """

    def __init__(
        self,
        side: SideConnection,
        scope: RunScope,
        epoch: int,
        progress: Callable[[], tuple[int, int | None]],
        every_s: float,
    ) -> None:
        self._side = side
        self._scope = scope
        self._epoch = epoch
        self._progress = progress
        self._every_s = every_s
        self._stop = threading.Event()
        self.fenced_out = False
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
        while not self._stop.wait(self._every_s):
            done, total = self._progress()
            try:
                with self._side.use() as conn:
                    if not beat(conn, self._scope, self._epoch, done, total):
                        self.fenced_out = True
                        return
            except psycopg.Error:
                # A missed beat is not worth killing the step for; the next one retries
                # (the side connection reconnects when it was lost).
                continue
