"""Which run groups' stored state may be deleted (`orbit db prune`), and deleting it.

A group's outputs are what a re-execution from failure loads, so they may go only when no
re-execution can need them: the group's newest run SUCCEEDED (or a person abandoned the
group) and that happened before the cutoff. A group whose newest run FAILED or was
CANCELED can still be recovered, and a group with a run queued or in flight is in use:
both are kept, whatever their age.

What goes with a group: its step outputs, row ledger (per-row and done-batch records),
tokens, batches, aggregation state, effects, fences, heartbeats, recovery rows and
remembered recovery decisions (``GROUP_TABLES``); ``orbit.run_groups`` (a person's say
about the group) stays. Never pruned, however old: a group with an effect in doubt
(someone must still reconcile it) or a held recovery (someone must still decide).

Finding a group's runs: Dagster's ``get_run_group`` follows the ``dagster/root_run_id``
*tag*, which ``execute_job`` re-executions do not set (only the ``root_run_id`` field), so
we collect run ids from our own tables, from that tag, and from runs of the same job
created after the root whose ``root_run_id`` field points at it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import DagsterInstance, DagsterRunStatus, RunRecord, RunsFilter
from sqlalchemy import Column, Connection, Engine, Table, delete, func, select

from orbit_pipelines.store.effect_ledger import WITH_SCOPE, is_in_doubt
from orbit_pipelines.store.recoveries import recovery_decisions
from orbit_pipelines.store.step_outputs import GroupUsage, group_usage, prune_groups
from orbit_pipelines.store.tables import (
    aggregation_state,
    batches,
    done_batches,
    effect_scopes,
    effects,
    heartbeats,
    recoveries,
    row_tokens,
    run_groups,
    step_fences,
    step_outputs,
    step_rows,
)
from orbit_pipelines.tags import ROOT_RUN_ID_TAG

FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}

PRUNE = "prune"

# Every table keyed by a run group, besides step_outputs, with the column that says when
# the group last touched it. Order matters for nothing (no foreign keys between them);
# batch_members and step_output_chunks go with their parents (ON DELETE CASCADE).
GROUP_TABLES: tuple[tuple[Table, str], ...] = (
    (step_rows, "updated_at"),
    (done_batches, "created_at"),
    (row_tokens, "updated_at"),
    (batches, "updated_at"),
    (aggregation_state, "updated_at"),
    (effect_scopes, "created_at"),
    (step_fences, "claimed_at"),
    (heartbeats, "beat_at"),
    (recoveries, "detected_at"),
    (recovery_decisions, "decided_at"),
)


@dataclass(frozen=True)
class GroupDecision:
    """Whether one group's outputs go, and why (for the CLI's report)."""

    usage: GroupUsage
    verdict: str  # "prune" or why it is kept
    reason: str

    @property
    def prune(self) -> bool:
        """True when the outputs may be deleted."""
        return self.verdict == PRUNE


def decide(
    instance: DagsterInstance, engine: Engine, cutoff: datetime, *, include_orphans: bool
) -> list[GroupDecision]:
    """A decision for every run group that has anything stored."""
    with engine.connect() as conn:
        usages = _all_usages(conn)
        abandoned: dict[str, datetime] = dict(
            conn.execute(  # type: ignore[arg-type]  # rows are (root_run_id, abandoned_at)
                select(run_groups.c.root_run_id, run_groups.c.abandoned_at).where(
                    run_groups.c.abandoned_at.is_not(None)
                )
            ).all()
        )
        recovery_rows = conn.execute(
            select(
                recoveries.c.root_run_id,
                recoveries.c.parent_run_id,
                recoveries.c.recovery_run_id,
                recoveries.c.status,
            )
        ).all()
        in_doubt = set(
            conn.execute(
                select(effect_scopes.c.root_run_id)
                .select_from(WITH_SCOPE)
                .where(is_in_doubt())
                .distinct()
            ).scalars()
        )
    known: dict[str, set[str]] = {}
    held: set[str] = set()
    for root, parent, recovery, status in recovery_rows:
        known.setdefault(root, set()).update(r for r in (parent, recovery) if r)
        if status == "held":
            held.add(root)
    decisions: list[GroupDecision] = []
    for usage in usages:
        root = usage.root_run_id
        if root in in_doubt:
            decisions.append(
                GroupDecision(usage, "in-doubt", "a side effect is in doubt: reconcile it first")
            )
        elif root in held:
            decisions.append(
                GroupDecision(usage, "held", "a recovery is held for a person to decide")
            )
        else:
            decisions.append(
                _decide_group(
                    instance,
                    usage,
                    abandoned.get(root),
                    known.get(root, set()),
                    cutoff,
                    include_orphans=include_orphans,
                )
            )
    return decisions


def _all_usages(conn: Connection) -> list[GroupUsage]:
    """``group_usage`` (groups with outputs) plus every group that has only other state;
    ``newest_at`` is the group's newest write in any table."""
    by_root = {u.root_run_id: u for u in group_usage(conn)}
    newest: dict[str, datetime] = {}
    runs: dict[str, set[str]] = {}
    for table, column in GROUP_TABLES:
        run_col: Column[str] | None = table.c.get("run_id")
        selected = [table.c.root_run_id, func.max(table.c[column])]
        if run_col is not None:
            selected.append(func.array_agg(func.distinct(run_col)))
        for row in conn.execute(select(*selected).group_by(table.c.root_run_id)).all():
            root, moment = row[0], row[1]
            newest[root] = max(moment, newest.get(root, moment))
            if run_col is not None:
                runs.setdefault(root, set()).update(r for r in row[2] if r)
    usages: list[GroupUsage] = []
    for root in sorted(set(by_root) | set(newest)):
        usage = by_root.get(root)
        moments = [m for m in (usage.newest_at if usage else None, newest.get(root)) if m]
        usages.append(
            GroupUsage(
                root,
                tuple(sorted({*(usage.run_ids if usage else ()), *runs.get(root, set())})),
                usage.outputs if usage else 0,
                usage.size_bytes if usage else 0,
                max(moments),
            )
        )
    return usages


def group_rows(conn: Connection, roots: Iterable[str]) -> dict[str, int]:
    """How many rows each table holds for these groups (what a prune would delete)."""
    ids = list(roots)
    counts: dict[str, int] = {}
    for table in (step_outputs, *(t for t, _ in GROUP_TABLES)):
        counts[table.name] = (
            int(
                conn.execute(
                    select(func.count()).select_from(table).where(table.c.root_run_id.in_(ids))
                ).scalar_one()
            )
            if ids
            else 0
        )
    # Effects are a group's through their scopes (effect_scopes is in GROUP_TABLES).
    counts[effects.name] = (
        int(
            conn.execute(
                select(func.count())
                .select_from(WITH_SCOPE)
                .where(effect_scopes.c.root_run_id.in_(ids))
            ).scalar_one()
        )
        if ids
        else 0
    )
    return counts


def prune(conn: Connection, roots: Iterable[str]) -> tuple[dict[str, int], int]:
    """Delete everything these groups hold; (rows deleted per table, output bytes freed)."""
    ids = list(roots)
    outputs, size = prune_groups(conn, ids)
    counts = {"step_outputs": outputs}
    effects_deleted = 0
    if ids:
        # Before their scopes, which name their group.
        scopes = select(effect_scopes.c.scope_id).where(effect_scopes.c.root_run_id.in_(ids))
        effects_deleted = conn.execute(
            delete(effects).where(effects.c.scope_id.in_(scopes))
        ).rowcount
    for table, _column in GROUP_TABLES:
        counts[table.name] = (
            conn.execute(delete(table).where(table.c.root_run_id.in_(ids))).rowcount if ids else 0
        )
    counts[effects.name] = effects_deleted
    return counts, size


def _decide_group(
    instance: DagsterInstance,
    usage: GroupUsage,
    abandoned_at: datetime | None,
    recovery_runs: set[str],
    cutoff: datetime,
    *,
    include_orphans: bool,
) -> GroupDecision:
    records = _group_runs(instance, usage.root_run_id, {*usage.run_ids, *recovery_runs})
    if not records:
        if not include_orphans:
            return GroupDecision(usage, "orphan", "no run of this group is known to Dagster")
        if usage.newest_at >= cutoff:
            return GroupDecision(usage, "recent", "orphan, stored after the cutoff")
        return GroupDecision(usage, PRUNE, "orphan: no run of this group is known to Dagster")
    in_flight = [r for r in records if r.dagster_run.status not in FINISHED]
    if in_flight:
        run = in_flight[0].dagster_run
        return GroupDecision(usage, "in-use", f"run {run.run_id} is {run.status.value}")
    newest = max(records, key=lambda r: r.create_timestamp)
    status = newest.dagster_run.status
    if status != DagsterRunStatus.SUCCESS and abandoned_at is None:
        return GroupDecision(
            usage,
            "recoverable",
            f"newest run {newest.dagster_run.run_id} is {status.value}: it can be re-executed",
        )
    ended = [r.end_time for r in records if r.end_time is not None]
    moments = [usage.newest_at, *(datetime.fromtimestamp(t, UTC) for t in ended)]
    if abandoned_at is not None:
        moments.append(abandoned_at)
    last = max(moments)
    if last >= cutoff:
        return GroupDecision(usage, "recent", f"finished {last.isoformat()}, after the cutoff")
    why = (
        "abandoned"
        if abandoned_at is not None
        else f"newest run {newest.dagster_run.run_id} succeeded"
    )
    return GroupDecision(usage, PRUNE, f"{why}; last activity {last.isoformat()}")


def _group_runs(instance: DagsterInstance, root: str, seen: Iterable[str]) -> list[RunRecord]:
    ids = {root, *seen}
    records = {
        r.dagster_run.run_id: r for r in instance.get_run_records(RunsFilter(run_ids=list(ids)))
    }
    for record in instance.get_run_records(RunsFilter(tags={ROOT_RUN_ID_TAG: root})):
        records[record.dagster_run.run_id] = record
    root_record = records.get(root)
    if root_record is not None:
        later = instance.get_run_records(
            RunsFilter(
                job_name=root_record.dagster_run.job_name,
                created_after=root_record.create_timestamp,
            )
        )
        for record in later:
            if record.dagster_run.root_run_id == root:
                records[record.dagster_run.run_id] = record
    return list(records.values())


def prunable_roots(decisions: Iterable[GroupDecision]) -> list[str]:
    """Root run ids of the groups to delete."""
    return [d.usage.root_run_id for d in decisions if d.prune]


__all__ = ["GROUP_TABLES", "GroupDecision", "decide", "group_rows", "prunable_roots", "prune"]
