"""Heartbeats: the executor says "this step of this run is alive, and this far along".

Written by ``execution/`` at every batch commit and every few seconds while a slow row runs;
read by ``recovery/`` to tell dead runs (old ``beat_at``, pid gone) and hung runs (fresh
``beat_at`` but ``progress_at`` not moving) from healthy ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, case, func, or_, select
from sqlalchemy.dialects.postgresql import insert

from orbit_pipelines.store.tables import heartbeats


@dataclass(frozen=True)
class Heartbeat:
    """The latest beat of one step in one run."""

    run_id: str
    step_key: str
    root_run_id: str
    host: str
    pid: int
    rows_done: int
    rows_total: int | None
    started_at: datetime
    progress_at: datetime
    beat_at: datetime


def write_heartbeat(
    conn: Connection,
    *,
    run_id: str,
    step_key: str,
    root_run_id: str,
    host: str,
    pid: int,
    rows_done: int,
    rows_total: int | None,
) -> None:
    """Upsert the beat. ``progress_at`` moves only when ``rows_done`` changed (or pid changed)."""
    stmt = insert(heartbeats).values(
        run_id=run_id,
        step_key=step_key,
        root_run_id=root_run_id,
        host=host,
        pid=pid,
        rows_done=rows_done,
        rows_total=rows_total,
    )
    excluded = stmt.excluded
    # Progress moves when rows moved, or when the step restarted in a new process.
    progress_at = case(
        (
            or_(
                heartbeats.c.rows_done != excluded.rows_done,
                heartbeats.c.pid != excluded.pid,
            ),
            func.now(),
        ),
        else_=heartbeats.c.progress_at,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[heartbeats.c.run_id, heartbeats.c.step_key],
        set_={
            "host": excluded.host,
            "pid": excluded.pid,
            "rows_done": excluded.rows_done,
            "rows_total": excluded.rows_total,
            "progress_at": progress_at,
            "beat_at": func.now(),
        },
    )
    conn.execute(stmt)


def heartbeats_for_runs(conn: Connection, run_ids: Iterable[str]) -> list[Heartbeat]:
    """Every step heartbeat of the given runs."""
    ids = list(run_ids)
    if not ids:
        return []
    rows = conn.execute(select(heartbeats).where(heartbeats.c.run_id.in_(ids))).mappings()
    return [Heartbeat(**dict(row)) for row in rows]


def heartbeats_for_group(conn: Connection, root_run_id: str) -> list[Heartbeat]:
    """Every step heartbeat of every run in a run group."""
    rows = conn.execute(
        select(heartbeats).where(heartbeats.c.root_run_id == root_run_id)
    ).mappings()
    return [Heartbeat(**dict(row)) for row in rows]
