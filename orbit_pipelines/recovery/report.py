"""What happened to a run group: its runs, in order, and every recovery decision."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DagsterInstance
from sqlalchemy import Connection

from orbit_pipelines.store.recoveries import Recovery, recoveries_for_group
from orbit_pipelines.tags import ATTEMPT_TAG


@dataclass(frozen=True)
class GroupRun:
    """One run of a run group."""

    run_id: str
    parent_run_id: str | None
    status: str
    attempt: str | None


@dataclass(frozen=True)
class GroupReport:
    """A run group: its runs (oldest first) and the recovery decisions about them."""

    root_run_id: str
    runs: list[GroupRun]
    recoveries: list[Recovery]

    @property
    def needs_person(self) -> list[Recovery]:
        """Decisions that wait for a person (held: non-retryable error, doubt, budget)."""
        return [r for r in self.recoveries if r.status == "held"]


def group_report(instance: DagsterInstance, conn: Connection, run_id: str) -> GroupReport:
    """The report of the run group ``run_id`` belongs to (any run of the group works)."""
    group = instance.get_run_group(run_id)
    if group is None:
        root, runs = run_id, []
    else:
        root, runs = group[0], list(group[1])
    runs.sort(key=lambda r: (r.run_id != root, r.tags.get(ATTEMPT_TAG, "")))
    return GroupReport(
        root_run_id=root,
        runs=[
            GroupRun(r.run_id, r.parent_run_id, r.status.value, r.tags.get(ATTEMPT_TAG))
            for r in runs
        ],
        recoveries=recoveries_for_group(conn, root),
    )
