"""Fencing tokens for steps: claim an epoch when a step starts, check it in every commit.

A heartbeat timeout alone cannot stop a worker that was only paused (GC, VM freeze,
SIGSTOP): when it wakes it believes it still owns its step. The epoch in
``orbit.step_fences`` is the step's owner; a newer execution takes epoch + 1 and every
write of the older one is refused in its own transaction (Kleppmann's fencing token).
"""

from __future__ import annotations

import os
import socket

import psycopg

from orbit_pipelines.errors import E4009_STALE_EXECUTION, OrbitError
from orbit_pipelines.store.named_sql import load_sql


def claim_epoch(conn: psycopg.Connection, root_run_id: str, step_key: str, run_id: str) -> int:
    """Take ownership of the step; returns the new epoch (the caller commits).

    The previous owner's batch session is terminated first: if that owner is only paused,
    its open transaction would otherwise hold row locks (of its transactional effects,
    of the fence row) that this execution then waits on until it wakes.
    """
    evict_previous_owner(conn, root_run_id, step_key)
    with conn.cursor() as cur:
        cur.execute(
            load_sql("fence_claim"),
            {
                "root_run_id": root_run_id,
                "step_key": step_key,
                "run_id": run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
            },
        )
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def evict_previous_owner(conn: psycopg.Connection, root_run_id: str, step_key: str) -> int:
    """Terminate the batch session of the step's current owner; how many were ended.

    Without the right to signal that session (another role, no pg_signal_backend) nothing
    is ended and the owner's idle-in-transaction timeout is the backstop.
    """
    try:
        with conn.cursor() as cur:
            cur.execute(load_sql("fence_evict"), {"root_run_id": root_run_id, "step_key": step_key})
            ended = sum(1 for (ok,) in cur.fetchall() if ok)
        conn.commit()
        return ended
    except psycopg.errors.InsufficientPrivilege:
        conn.rollback()
        return 0


def current_epoch(
    conn: psycopg.Connection, root_run_id: str, step_key: str, *, lock: bool
) -> int | None:
    """The owner's epoch (None when nobody claimed the step); ``lock`` holds off a newer
    claim until the caller's transaction ends."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("fence_check" if lock else "fence_peek"),
            {"root_run_id": root_run_id, "step_key": step_key},
        )
        row = cur.fetchone()
    return None if row is None else int(row[0])


class FencedOut(OrbitError):
    """A newer execution owns the step: this one's write was refused."""

    def __init__(self, root_run_id: str, step_key: str, epoch: int) -> None:
        super().__init__(
            E4009_STALE_EXECUTION,
            f"step {step_key} of run group {root_run_id} is owned by a newer execution "
            f"(this one held epoch {epoch}); nothing of this execution's batch was recorded",
            hint="nothing to do: the newer execution (a recovery) carries on; this one stops",
        )
