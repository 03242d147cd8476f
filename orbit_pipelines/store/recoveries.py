"""Queries on ``orbit.recoveries``, ``orbit.run_groups`` and the recovery switches in ``orbit.settings``.

The UNIQUE constraint on ``recoveries.parent_run_id`` is what makes a recovery happen once:
``claim_recovery`` inserts with ON CONFLICT DO NOTHING, and only the caller that got a row
back may launch. Every state change below is one conditional UPDATE, so two callers racing
on the same row cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from orbit_pipelines.store.tables import recoveries, run_groups, settings

AUTO_RECOVERY_SETTING = "auto_recovery"

# Rows that used up one attempt of a run group's budget.
_COUNTED_STATUSES = ("launching", "launched", "succeeded", "failed")


@dataclass(frozen=True)
class Recovery:
    """One row of ``orbit.recoveries``: what was decided about one failed run."""

    recovery_id: int
    parent_run_id: str
    root_run_id: str
    job_name: str
    attempt: int
    reason: str
    detail: str
    decided_by: str
    status: str
    recovery_run_id: str | None
    not_before: datetime | None
    detected_at: datetime
    launched_at: datetime | None
    finished_at: datetime | None
    outcome: str | None


def _to_recovery(row: object) -> Recovery:
    return Recovery(**dict(row))  # type: ignore[call-overload]


def claim_recovery(
    conn: Connection,
    *,
    parent_run_id: str,
    root_run_id: str,
    job_name: str,
    attempt: int,
    reason: str,
    detail: str,
    decided_by: str,
    status: str = "launching",
    not_before: datetime | None = None,
) -> Recovery | None:
    """Insert the decision for ``parent_run_id``; None when another caller already has it."""
    stmt = (
        insert(recoveries)
        .values(
            parent_run_id=parent_run_id,
            root_run_id=root_run_id,
            job_name=job_name,
            attempt=attempt,
            reason=reason,
            detail=detail,
            decided_by=decided_by,
            status=status,
            not_before=not_before,
        )
        .on_conflict_do_nothing(index_elements=[recoveries.c.parent_run_id])
        .returning(*recoveries.c)
    )
    row = conn.execute(stmt).mappings().first()
    return _to_recovery(row) if row is not None else None


def take_over(
    conn: Connection,
    *,
    parent_run_id: str,
    decided_by: str,
    stale_after_s: float,
    from_held: bool = False,
) -> Recovery | None:
    """Take a row another launcher left behind: 'launching' for longer than ``stale_after_s``
    (its launcher crashed), or — when ``from_held`` — a 'held' row a person now releases.

    One conditional UPDATE: of two callers, exactly one gets the row back.
    """
    stale = and_(
        recoveries.c.status == "launching",
        recoveries.c.detected_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, stale_after_s),
    )
    condition = or_(stale, recoveries.c.status == "held") if from_held else stale
    stmt = (
        update(recoveries)
        .where(recoveries.c.parent_run_id == parent_run_id, condition)
        .values(status="launching", decided_by=decided_by, detected_at=func.now())
        .returning(*recoveries.c)
    )
    row = conn.execute(stmt).mappings().first()
    return _to_recovery(row) if row is not None else None


def mark_launched(conn: Connection, *, parent_run_id: str, recovery_run_id: str) -> None:
    """The recovery run exists and is submitted."""
    conn.execute(
        update(recoveries)
        .where(recoveries.c.parent_run_id == parent_run_id)
        .values(status="launched", recovery_run_id=recovery_run_id, launched_at=func.now())
    )


def mark_finished(conn: Connection, *, parent_run_id: str, status: str, outcome: str) -> bool:
    """Record that the recovery run ended (``status`` 'succeeded' or 'failed')."""
    result = conn.execute(
        update(recoveries)
        .where(recoveries.c.parent_run_id == parent_run_id, recoveries.c.status == "launched")
        .values(status=status, outcome=outcome, finished_at=func.now())
    )
    return result.rowcount == 1


def mark_launch_failed(conn: Connection, *, parent_run_id: str, outcome: str) -> None:
    """The launch itself failed: hold the row for a person, with the error as outcome."""
    conn.execute(
        update(recoveries)
        .where(recoveries.c.parent_run_id == parent_run_id, recoveries.c.status == "launching")
        .values(status="held", outcome=outcome)
    )


def get_recovery(conn: Connection, parent_run_id: str) -> Recovery | None:
    """The decision recorded for one failed run, if any."""
    row = (
        conn.execute(select(recoveries).where(recoveries.c.parent_run_id == parent_run_id))
        .mappings()
        .first()
    )
    return _to_recovery(row) if row is not None else None


def recoveries_for_group(conn: Connection, root_run_id: str) -> list[Recovery]:
    """Every decision in a run group, oldest first."""
    rows = conn.execute(
        select(recoveries)
        .where(recoveries.c.root_run_id == root_run_id)
        .order_by(recoveries.c.recovery_id)
    ).mappings()
    return [_to_recovery(r) for r in rows]


def recorded_parents(conn: Connection, parent_run_ids: list[str]) -> set[str]:
    """Which of these runs already have a decision row."""
    if not parent_run_ids:
        return set()
    rows = conn.execute(
        select(recoveries.c.parent_run_id).where(recoveries.c.parent_run_id.in_(parent_run_ids))
    )
    return {r[0] for r in rows}


def attempts_used(conn: Connection, root_run_id: str) -> int:
    """How many recoveries of this run group were launched (or are being launched)."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(recoveries)
            .where(
                recoveries.c.root_run_id == root_run_id,
                recoveries.c.status.in_(_COUNTED_STATUSES),
            )
        ).scalar_one()
    )


def stale_launches(conn: Connection, older_than_s: float) -> list[Recovery]:
    """'launching' rows older than ``older_than_s``: their launcher crashed mid-launch."""
    rows = conn.execute(
        select(recoveries).where(
            recoveries.c.status == "launching",
            recoveries.c.detected_at
            < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s),
        )
    ).mappings()
    return [_to_recovery(r) for r in rows]


def unfinished_recoveries(conn: Connection) -> list[Recovery]:
    """Rows whose recovery run was launched but whose end is not recorded yet."""
    rows = conn.execute(select(recoveries).where(recoveries.c.status == "launched")).mappings()
    return [_to_recovery(r) for r in rows]


def auto_recovery_enabled(conn: Connection) -> bool:
    """The global kill switch: ``orbit.settings`` 'auto_recovery' (absent means on)."""
    value = conn.execute(
        select(settings.c.value).where(settings.c.name == AUTO_RECOVERY_SETTING)
    ).scalar()
    return value is not False


def set_auto_recovery(conn: Connection, enabled: bool) -> None:
    """Turn automatic recovery on or off everywhere."""
    stmt = insert(settings).values(name=AUTO_RECOVERY_SETTING, value=enabled)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[settings.c.name], set_={"value": enabled, "updated_at": func.now()}
        )
    )


@dataclass(frozen=True)
class GroupControl:
    """A person's say about one run group."""

    auto_recover: bool
    abandoned_at: datetime | None
    note: str | None


def group_control(conn: Connection, root_run_id: str) -> GroupControl | None:
    """The controls set on a run group, or None when nobody set any."""
    row = (
        conn.execute(select(run_groups).where(run_groups.c.root_run_id == root_run_id))
        .mappings()
        .first()
    )
    if row is None:
        return None
    return GroupControl(row["auto_recover"], row["abandoned_at"], row["note"])


def set_group_control(
    conn: Connection,
    root_run_id: str,
    *,
    auto_recover: bool | None = None,
    abandoned: bool | None = None,
    note: str | None = None,
) -> None:
    """Upsert a run group's controls (only the given fields change)."""
    values: dict[str, object] = {"updated_at": func.now()}
    if auto_recover is not None:
        values["auto_recover"] = auto_recover
    if abandoned is not None:
        values["abandoned_at"] = func.now() if abandoned else None
    if note is not None:
        values["note"] = note
    stmt = insert(run_groups).values(
        root_run_id=root_run_id,
        auto_recover=True if auto_recover is None else auto_recover,
        abandoned_at=func.now() if abandoned else None,
        note=note,
    )
    conn.execute(stmt.on_conflict_do_update(index_elements=[run_groups.c.root_run_id], set_=values))
