"""Which run groups' stored outputs may be deleted (`orbit db prune`).

A group's outputs are what a re-execution from failure loads, so they may go only when no
re-execution can need them: the group's newest run SUCCEEDED (or a person abandoned the
group) and that happened before the cutoff. A group whose newest run FAILED or was
CANCELED can still be recovered, and a group with a run queued or in flight is in use:
both are kept, whatever their age.

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
from sqlalchemy import Engine, select

from orbit_pipelines.store.step_outputs import GroupUsage, group_usage
from orbit_pipelines.store.tables import recoveries, run_groups

ROOT_RUN_TAG = "dagster/root_run_id"
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}

PRUNE = "prune"


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
    """A decision for every run group that has stored outputs."""
    with engine.connect() as conn:
        usages = group_usage(conn)
        abandoned: dict[str, datetime] = dict(
            conn.execute(  # type: ignore[arg-type]  # rows are (root_run_id, abandoned_at)
                select(run_groups.c.root_run_id, run_groups.c.abandoned_at).where(
                    run_groups.c.abandoned_at.is_not(None)
                )
            ).all()
        )
        recovery_rows = conn.execute(
            select(
                recoveries.c.root_run_id, recoveries.c.parent_run_id, recoveries.c.recovery_run_id
            )
        ).all()
    known: dict[str, set[str]] = {}
    for root, parent, recovery in recovery_rows:
        known.setdefault(root, set()).update(r for r in (parent, recovery) if r)
    return [
        _decide_group(
            instance,
            usage,
            abandoned.get(usage.root_run_id),
            known.get(usage.root_run_id, set()),
            cutoff,
            include_orphans=include_orphans,
        )
        for usage in usages
    ]


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
    for record in instance.get_run_records(RunsFilter(tags={ROOT_RUN_TAG: root})):
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


__all__ = ["GroupDecision", "decide", "prunable_roots"]
