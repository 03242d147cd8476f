"""Read-only questions about a run group's progress that the CLI shows a person."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY, Connection, Text, any_, bindparam, func, select, text

from orbit_pipelines.store.effect_ledger import (
    EFFECT_KEY,
    OPEN_EFFECT_COLUMNS,
    STATUS_NAME,
    WITH_SCOPE,
    OpenEffect,
    is_in_doubt,
)
from orbit_pipelines.store.heartbeats import Heartbeat
from orbit_pipelines.store.named_sql import load_sql
from orbit_pipelines.store.recoveries import GroupControl, Recovery
from orbit_pipelines.store.row_ledger import status_counts
from orbit_pipelines.store.tables import effect_scopes, effects, heartbeats, recoveries, run_groups


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
        .select_from(WITH_SCOPE)
        .where(effect_scopes.c.root_run_id == root_run_id)
        .group_by(effects.c.status)
    )
    return {STATUS_NAME[status]: int(n) for status, n in conn.execute(stmt)}


def held_parent_run_ids(conn: Connection) -> list[str]:
    """Runs whose recovery is held for a person, oldest decision first."""
    stmt = (
        select(recoveries.c.parent_run_id)
        .where(recoveries.c.status == "held")
        .order_by(recoveries.c.detected_at)
    )
    return list(conn.execute(stmt).scalars())


def row_counts_by_step(conn: Connection, root_run_id: str) -> dict[str, dict[str, int]]:
    """Rows per status for every step of a run group (both row ledgers)."""
    return {step: n for (_, step), n in status_counts(conn, [root_run_id]).items()}


def last_done_row_in_order(conn: Connection, root_run_id: str, step_key: str) -> DoneRow | None:
    """The last row of ``step_key`` completed, in input order, with its recorded result.

    Rows are committed in batches that share one ``updated_at``, so "latest updated_at"
    alone picks an arbitrary row of the last batch. Inside that batch, the last row with a
    succeeded side effect is preferred, then rows go by input order (the batch's INSERT, a
    done-batch record's keys; a done effect keeps no time of its own). A row whose own
    result is empty shows its succeeded effect's result (e.g. the carrier's tracking number).
    """
    return last_done_rows_in_order(conn, [(root_run_id, step_key)]).get((root_run_id, step_key))


# --- many groups at once (``orbit check-interrupted`` at deployment scale) ---


@dataclass(frozen=True)
class GroupsProgress:
    """What the ledger knows about a set of run groups, read in eight queries whatever
    their number: the batched form of ``heartbeats_for_group``, ``row_counts_by_step``,
    ``recoveries_for_group``, ``group_control``, ``effects_in_doubt`` and
    ``effects_by_status``, with the same definitions and orders."""

    beats: dict[str, list[Heartbeat]]
    row_counts: dict[str, dict[str, dict[str, int]]]
    recoveries: dict[str, list[Recovery]]
    controls: dict[str, GroupControl]
    in_doubt: dict[str, list[OpenEffect]]
    effect_counts: dict[str, dict[str, int]]


def _any(values: list[str]) -> Any:
    """``= ANY(%(roots)s::text[])``: one array parameter, where ``IN`` binds (and SQLAlchemy
    compiles) one parameter per value; at 5,000 groups that was most of these queries' time."""
    return any_(bindparam(None, values, type_=ARRAY(Text)))


def groups_progress(conn: Connection, root_run_ids: Iterable[str]) -> GroupsProgress:
    """The ledger's view of every group in ``root_run_ids`` (one query per table)."""
    roots = sorted(set(root_run_ids))
    progress = GroupsProgress({}, {}, {}, {}, {}, {})
    if not roots:
        return progress
    for row in conn.execute(
        select(heartbeats).where(heartbeats.c.root_run_id == _any(roots))
    ).mappings():
        progress.beats.setdefault(row["root_run_id"], []).append(Heartbeat(**dict(row)))
    for (root, step_key), by_status in status_counts(conn, roots).items():
        progress.row_counts.setdefault(root, {})[step_key] = by_status
    for row in conn.execute(
        select(recoveries)
        .where(recoveries.c.root_run_id == _any(roots))
        .order_by(recoveries.c.recovery_id)
    ).mappings():
        progress.recoveries.setdefault(row["root_run_id"], []).append(Recovery(**dict(row)))
    for row in conn.execute(
        select(run_groups).where(run_groups.c.root_run_id == _any(roots))
    ).mappings():
        progress.controls[row["root_run_id"]] = GroupControl(
            row["auto_recover"], row["abandoned_at"], row["note"]
        )
    # Same columns, condition and order as effect_ledger.effects_in_doubt.
    open_rows = conn.execute(
        select(*OPEN_EFFECT_COLUMNS)
        .select_from(WITH_SCOPE)
        .where(effect_scopes.c.root_run_id == _any(roots), is_in_doubt())
        .order_by(EFFECT_KEY)
    )
    for open_row in open_rows:
        effect = OpenEffect(*open_row)
        progress.in_doubt.setdefault(effect.root_run_id, []).append(effect)
    for root, status, n in conn.execute(
        select(effect_scopes.c.root_run_id, effects.c.status, func.count())
        .select_from(WITH_SCOPE)
        .where(effect_scopes.c.root_run_id == _any(roots))
        .group_by(effect_scopes.c.root_run_id, effects.c.status)
    ):
        progress.effect_counts.setdefault(root, {})[STATUS_NAME[status]] = int(n)
    return progress


def last_done_rows_in_order(
    conn: Connection, wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], DoneRow]:
    """``last_done_row_in_order`` for many (root run id, step key) pairs in one query."""
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    sql = load_sql("last_done_rows").replace("%(roots)s", ":roots").replace("%(steps)s", ":steps")
    rows = conn.execute(
        text(sql), {"roots": [root for root, _ in pairs], "steps": [step for _, step in pairs]}
    )
    return {
        (root, step): DoneRow(step, row_key, result if result is not None else effect_result)
        for root, step, row_key, result, effect_result in rows
    }
