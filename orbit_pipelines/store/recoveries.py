"""Queries on ``orbit.recoveries``, ``orbit.run_groups`` and the recovery switches in ``orbit.settings``.

The UNIQUE constraint on ``recoveries.parent_run_id`` is what makes a recovery happen once:
``claim_recovery`` inserts with ON CONFLICT DO NOTHING, and only the caller that got a row
back may launch. Every state change below is one conditional UPDATE, so two callers racing
on the same row cannot both win.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Exists,
    Integer,
    Table,
    Text,
    and_,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert

from orbit_pipelines.store.effect_ledger import (
    EFFECT_KEY,
    OPEN_EFFECT_COLUMNS,
    WITH_SCOPE,
    group_of,
    in_doubt_exists,
    is_in_doubt,
)
from orbit_pipelines.store.tables import effect_scopes, metadata, recoveries, run_groups, settings

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


def claim_many(conn: Connection, rows: Sequence[dict[str, object]], *, status: str) -> set[str]:
    """``claim_recovery`` for many runs in one statement; the parent run ids this call got."""
    if not rows:
        return set()
    stmt = (
        insert(recoveries)
        .values([{**row, "status": status} for row in rows])
        .on_conflict_do_nothing(index_elements=[recoveries.c.parent_run_id])
        .returning(recoveries.c.parent_run_id)
    )
    return set(conn.execute(stmt).scalars())


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
        # A failed launch left its error as the outcome; this launch has none yet.
        .values(status="launching", decided_by=decided_by, detected_at=func.now(), outcome=None)
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


def drop_cancelled_launch(conn: Connection, *, parent_run_id: str, why: str) -> bool:
    """Undo a 'launching' claim whose run group was cancelled before its run was created:
    the row goes (it never launched) and the remembered decision becomes a skip that waits
    for the group's switch, as if the group had been cancelled before the decision; so
    ``orbit cancel --undo`` makes it due again and ``orbit resume`` claims afresh."""
    gone = conn.execute(
        delete(recoveries)
        .where(recoveries.c.parent_run_id == parent_run_id, recoveries.c.status == "launching")
        .returning(recoveries.c.parent_run_id)
    ).first()
    if gone is None:
        return False
    conn.execute(
        update(recovery_decisions)
        .where(recovery_decisions.c.parent_run_id == parent_run_id)
        .values(action="skip", why=why, depends="switch_group", not_before=None)
    )
    return True


def mark_launch_failed(conn: Connection, *, parent_run_id: str, outcome: str) -> None:
    """The launch itself failed: hold the row for a person, with the error as outcome and
    as the hold's reason (what ``check-interrupted`` shows after ``| held:``; an earlier
    hold's reason, from before a person's ``orbit resume``, is replaced)."""
    conn.execute(
        update(recoveries)
        .where(recoveries.c.parent_run_id == parent_run_id, recoveries.c.status == "launching")
        .values(
            status="held",
            outcome=outcome,
            detail=func.concat(
                func.split_part(recoveries.c.detail, " | held: ", 1), " | held: ", outcome
            ),
        )
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


# --- detection at scale (migration 0006): the failure cursor and remembered decisions ---

recovery_scan = Table(
    "recovery_scan",
    metadata,
    Column("scanner", Text, primary_key=True),
    Column("failure_cursor", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

recovery_decisions = Table(
    "recovery_decisions",
    metadata,
    Column("parent_run_id", Text, primary_key=True),
    Column("root_run_id", Text, nullable=False),
    Column("job_name", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("error_code", Text),
    Column("failed_at", DateTime(timezone=True)),
    Column("tags", JSONB, nullable=False),
    Column("action", Text, nullable=False),
    Column("why", Text, nullable=False),
    Column("depends", Text, nullable=False),
    Column("not_before", DateTime(timezone=True)),
    Column("decided_by", Text, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("decisions", Integer, nullable=False),
)

# Decisions that a later change (backoff elapsed, a switch back on) can turn into another.
OPEN_DEPENDS = ("backoff", "switch_global", "switch_group")


@dataclass(frozen=True)
class StoredDecision:
    """One row of ``orbit.recovery_decisions``: the last decision about one run, and what it
    waits for."""

    parent_run_id: str
    root_run_id: str
    job_name: str
    reason: str
    detail: str
    error_code: str | None
    failed_at: datetime | None
    tags: dict[str, str]
    action: str
    why: str
    depends: str
    not_before: datetime | None
    decided_by: str
    decided_at: datetime
    decisions: int


def failure_cursor(conn: Connection, scanner: str) -> int | None:
    """The storage id of the last RUN_FAILURE event ``scanner`` read; None before its first."""
    value = conn.execute(
        select(recovery_scan.c.failure_cursor).where(recovery_scan.c.scanner == scanner)
    ).scalar()
    return int(value) if value is not None else None


def save_failure_cursor(conn: Connection, scanner: str, cursor: int) -> None:
    """Move ``scanner``'s cursor forward (never back: two ticks racing keep the larger)."""
    stmt = insert(recovery_scan).values(
        scanner=scanner, failure_cursor=cursor, updated_at=func.now()
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[recovery_scan.c.scanner],
            set_={
                "failure_cursor": func.greatest(recovery_scan.c.failure_cursor, cursor),
                "updated_at": func.now(),
            },
        )
    )


def decided_runs(conn: Connection, run_ids: Sequence[str]) -> set[str]:
    """Which of these runs already have a decision: a remembered one or a recoveries row."""
    if not run_ids:
        return set()
    ids = list(run_ids)
    remembered = select(recovery_decisions.c.parent_run_id).where(
        recovery_decisions.c.parent_run_id.in_(ids)
    )
    recorded = select(recoveries.c.parent_run_id).where(recoveries.c.parent_run_id.in_(ids))
    return set(conn.execute(remembered.union(recorded)).scalars())


def save_decisions(conn: Connection, rows: Iterable[dict[str, object]]) -> None:
    """Insert or replace decisions (one statement); a replaced one counts ``decisions + 1``."""
    values = [{**row, "decided_at": func.now(), "decisions": 1} for row in rows]
    if not values:
        return
    stmt = insert(recovery_decisions).values(values)
    excluded = stmt.excluded
    names = (
        "reason",
        "detail",
        "error_code",
        "failed_at",
        "tags",
        "action",
        "why",
        "depends",
        "not_before",
        "decided_by",
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[recovery_decisions.c.parent_run_id],
            set_={
                **{name: excluded[name] for name in names},
                "decided_at": func.now(),
                "decisions": recovery_decisions.c.decisions + 1,
            },
        )
    )


def due_decisions(conn: Connection, *, limit: int) -> list[StoredDecision]:
    """Remembered decisions whose reason is gone: backoff elapsed, or the switch that made
    them a skip is on again. One query; what is not due costs nothing.

    First it releases holds whose side effects are all settled (``release_effect_holds``,
    one statement when there is none): however the effects were settled (``orbit effects
    resolve``, ``resolve_effect`` from Python, a reconcile), the next pass decides again."""
    release_effect_holds(conn)
    global_on = auto_recovery_enabled(conn)
    group_on = or_(
        run_groups.c.root_run_id.is_(None),
        and_(run_groups.c.auto_recover.is_(True), run_groups.c.abandoned_at.is_(None)),
    )
    d = recovery_decisions.c
    stmt = (
        select(recovery_decisions)
        .select_from(
            recovery_decisions.outerjoin(run_groups, run_groups.c.root_run_id == d.root_run_id)
        )
        .where(
            d.depends.in_(OPEN_DEPENDS),
            or_(
                and_(d.depends == "backoff", d.not_before <= func.now()),
                and_(d.depends == "switch_global", literal(global_on)),
                and_(d.depends == "switch_group", group_on),
            ),
        )
        .order_by(d.not_before.nulls_first(), d.parent_run_id)
        .limit(limit)
    )
    return [StoredDecision(**dict(row)) for row in conn.execute(stmt).mappings()]


def get_decision(conn: Connection, parent_run_id: str) -> StoredDecision | None:
    """The remembered decision about one run, if any."""
    row = (
        conn.execute(
            select(recovery_decisions).where(recovery_decisions.c.parent_run_id == parent_run_id)
        )
        .mappings()
        .first()
    )
    return StoredDecision(**dict(row)) if row is not None else None


@dataclass(frozen=True)
class PolicyFacts:
    """What the recovery policy reads about a set of run groups, read in four queries."""

    auto_recovery: bool
    controls: dict[str, GroupControl]
    attempts: dict[str, int]
    in_doubt: dict[str, list[tuple[str, str, str]]]  # root -> [(effect_key, receiver, status)]


def policy_facts(conn: Connection, root_run_ids: Iterable[str]) -> PolicyFacts:
    """Switches, group controls, attempts used and effects in doubt of these groups at once
    (the batched form of ``auto_recovery_enabled``/``group_control``/``attempts_used`` and
    ``effect_ledger.effects_in_doubt``, with the same definitions)."""
    roots = sorted(set(root_run_ids))
    if not roots:
        return PolicyFacts(auto_recovery_enabled(conn), {}, {}, {})
    controls = {
        row["root_run_id"]: GroupControl(row["auto_recover"], row["abandoned_at"], row["note"])
        for row in conn.execute(
            select(run_groups).where(run_groups.c.root_run_id.in_(roots))
        ).mappings()
    }
    attempts: dict[str, int] = {
        root: int(count)
        for root, count in conn.execute(
            select(recoveries.c.root_run_id, func.count())
            .where(
                recoveries.c.root_run_id.in_(roots),
                recoveries.c.status.in_(_COUNTED_STATUSES),
            )
            .group_by(recoveries.c.root_run_id)
        ).all()
    }
    in_doubt: dict[str, list[tuple[str, str, str]]] = {}
    open_key, _root, _step, _row, open_receiver, open_status = OPEN_EFFECT_COLUMNS[:6]
    rows = conn.execute(
        select(effect_scopes.c.root_run_id, open_key, open_receiver, open_status)
        .select_from(WITH_SCOPE)
        .where(effect_scopes.c.root_run_id.in_(roots), is_in_doubt())
        .order_by(EFFECT_KEY)
    ).all()
    for root, key, receiver, status in rows:
        in_doubt.setdefault(root, []).append((key, receiver, status))
    return PolicyFacts(auto_recovery_enabled(conn), controls, attempts, in_doubt)


# How the policy's hold for side effects in doubt says why ("2 side effect(s) in doubt: ...");
# release_effect_holds finds those holds by it (the schema's ``depends`` has no value of its
# own for them, and adding one is a migration).
EFFECTS_HOLD_MARK = " side effect(s) in doubt: "


def _open_effect(root: ColumnElement[str]) -> Exists:
    """The group ``root`` has an effect in doubt."""
    return in_doubt_exists(root)


def release_effect_holds(conn: Connection, root_run_ids: Sequence[str] | None = None) -> list[str]:
    """Release the holds that waited only for side effects in doubt, in groups (all, or
    ``root_run_ids``) that have none left in doubt; returns the parent run ids released.

    The held ``orbit.recoveries`` row is deleted (it never counted as an attempt) and the
    remembered decision becomes due now, so the next recovery pass decides again from the
    run's remembered cause: with nothing in doubt the policy launches, or holds again for
    another reason (budget, error) with that reason. The DELETE ... RETURNING is the claim:
    of two callers releasing at once, one gets each row; a hold that a person's
    ``orbit resume`` took over meanwhile is no longer 'held' and is left alone.
    """
    d = recovery_decisions.c
    waiting = and_(d.action == "hold", d.why.like(f"%{EFFECTS_HOLD_MARK}%"))
    held = (
        select(d.parent_run_id)
        .where(waiting, ~_open_effect(d.root_run_id))
        .where(d.parent_run_id == recoveries.c.parent_run_id)
    )
    if root_run_ids is not None:
        if not root_run_ids:
            return []
        held = held.where(d.root_run_id.in_(list(root_run_ids)))
    releasable = and_(
        recoveries.c.status == "held",
        # Still held for effects: a failed launch after a person's resume replaced
        # the reason (mark_launch_failed) and waits for a person, not for effects.
        recoveries.c.detail.like(f"%| held: %{EFFECTS_HOLD_MARK}%"),
        held.exists(),
    )
    # Read first: every sensor pass calls this, and almost always there is nothing to
    # release. A DELETE that matches nothing still waits for a lock on orbit.recoveries
    # (found by chaos/test_concurrency.py, whose lock made every tick wait here), and the
    # steady tick should write nothing.
    candidates = list(conn.execute(select(recoveries.c.parent_run_id).where(releasable)).scalars())
    if not candidates:
        return []
    released = list(
        conn.execute(
            delete(recoveries)
            .where(recoveries.c.parent_run_id.in_(candidates), releasable)
            .returning(recoveries.c.parent_run_id)
        ).scalars()
    )
    if released:
        conn.execute(
            update(recovery_decisions)
            .where(d.parent_run_id.in_(released))
            .values(
                action="wait",
                why="the side effects in doubt are settled; deciding again",
                depends="backoff",
                not_before=func.now(),
            )
        )
    return released


def effect_root(conn: Connection, effect_key: str) -> str | None:
    """The run group an effect belongs to (None for an unknown key)."""
    return group_of(conn, effect_key)


def open_effect_keys(conn: Connection, root_run_id: str) -> list[str]:
    """Keys of the group's effects still in doubt (``effects_in_doubt``, keys only)."""
    return list(
        conn.execute(
            select(EFFECT_KEY)
            .select_from(WITH_SCOPE)
            .where(effect_scopes.c.root_run_id == root_run_id, is_in_doubt())
            .order_by(EFFECT_KEY)
        ).scalars()
    )


def forget_decisions(conn: Connection, parent_run_ids: Sequence[str]) -> None:
    """Drop remembered decisions (their run will be detected afresh)."""
    if parent_run_ids:
        conn.execute(
            delete(recovery_decisions).where(
                recovery_decisions.c.parent_run_id.in_(list(parent_run_ids))
            )
        )


def settle_decisions(conn: Connection, parent_run_ids: Sequence[str]) -> None:
    """Nothing can change these decisions any more (someone else recovered the run)."""
    if parent_run_ids:
        conn.execute(
            update(recovery_decisions)
            .where(recovery_decisions.c.parent_run_id.in_(list(parent_run_ids)))
            .values(depends="final")
        )
