"""Read-only questions about a run group's progress that the CLI shows a person."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select, text

from orbit_pipelines.store.named_sql import load_sql
from orbit_pipelines.store.tables import effects, recoveries, step_rows


@dataclass(frozen=True)
class DoneRow:
    """The most recently completed row of a step."""

    step_key: str
    row_key: str
    result: Any


def effects_by_status(conn: Connection, root_run_id: str) -> dict[str, int]:
    """How many side effects of a run group are in each ledger status."""
    stmt = (
        select(effects.c.status, func.count())
        .where(effects.c.root_run_id == root_run_id)
        .group_by(effects.c.status)
    )
    return {status: int(n) for status, n in conn.execute(stmt)}


def held_parent_run_ids(conn: Connection) -> list[str]:
    """Runs whose recovery is held for a person, oldest decision first."""
    stmt = (
        select(recoveries.c.parent_run_id)
        .where(recoveries.c.status == "held")
        .order_by(recoveries.c.detected_at)
    )
    return list(conn.execute(stmt).scalars())


def row_counts_by_step(conn: Connection, root_run_id: str) -> dict[str, dict[str, int]]:
    """Rows per status for every step of a run group, in one query."""
    stmt = (
        select(step_rows.c.step_key, step_rows.c.status, func.count())
        .where(step_rows.c.root_run_id == root_run_id)
        .group_by(step_rows.c.step_key, step_rows.c.status)
    )
    counts: dict[str, dict[str, int]] = {}
    for step_key, status, n in conn.execute(stmt):
        counts.setdefault(step_key, {})[status] = int(n)
    return counts


def last_done_row_in_order(conn: Connection, root_run_id: str, step_key: str) -> DoneRow | None:
    """The last row of ``step_key`` completed, in input order, with its recorded result.

    Rows are committed in batches that share one ``updated_at``, so "latest updated_at"
    alone picks an arbitrary row of the last batch. Inside that batch, the row whose side
    effect was recorded last is the last one processed (rows run one after the other);
    without effects, rows are stored in input order within their batch's INSERT. A row
    whose own result is empty shows its succeeded effect's result (e.g. the carrier's
    tracking number).
    """
    # The named file uses psycopg's %(name)s; SQLAlchemy's text() wants :name.
    sql = load_sql("last_done_row").replace("%(root_run_id)s", ":root")
    row = conn.execute(
        text(sql.replace("%(step_key)s", ":step")), {"root": root_run_id, "step": step_key}
    ).first()
    if row is None:
        return None
    return DoneRow(step_key, row[0], row[1] if row[1] is not None else row[2])
