"""What the recovery sensor must decide this tick, at a cost of O(what changed).

Three sources, each read with a constant number of queries per page:

- failed runs: a cursor over Dagster's RUN_FAILURE events (``orbit.recovery_scan``, one per
  scanner), paged oldest first, so every failed run is read once however many there are;
- remembered decisions whose reason is gone (``orbit.recovery_decisions``: backoff elapsed,
  a switch on again);
- dead and hung STARTED runs (``detect_stuck``), minus those already decided (a hung run
  that recovery is switched off for stays STARTED and would be decided again every tick).

Nothing is recorded here: ``cycle.run_cycle`` records the decisions and only then moves the
cursor, so a tick that dies half way is redone, never skipped.

Why the cursor is held back: Postgres hands out storage ids when a row is inserted, not when
it commits, so an event with a smaller id can become visible after one with a larger id.
The saved cursor therefore stops before the first event younger than ``OVERLAP_S``; those
few are read again next tick and dropped at once as decided (one query).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from sqlalchemy import Connection

from orbit_pipelines.recovery.detect import (
    PAGE_SIZE,
    Candidate,
    _parents_with_child,
    detect_stuck,
    failed_candidates,
    failure_page,
)
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.recoveries import (
    StoredDecision,
    decided_runs,
    due_decisions,
    failure_cursor,
    forget_decisions,
    recorded_parents,
    settle_decisions,
)

OVERLAP_S = 5.0
# A tick takes at most this many new candidates from the failure cursor, reads at most
# MAX_PAGES pages (pages already decided cost three queries each) and stops paging after
# TIME_BUDGET_S: the rest is for the next tick, well inside Dagster's sensor timeout.
MAX_CANDIDATES = 2000
MAX_PAGES = 100
TIME_BUDGET_S = 15.0


@dataclass
class ScanResult:
    """The candidates of one tick and the cursor to save once they are decided."""

    candidates: list[Candidate] = field(default_factory=list)
    cursor: int | None = None
    pages: int = 0
    more: bool = False  # the page or time budget stopped the read: more failures wait


def scan(
    instance: DagsterInstance,
    conn: Connection,
    settings: RecoverySettings,
    *,
    scanner: str,
    now: datetime | None = None,
    keep: Callable[[str], bool] | None = None,
) -> ScanResult:
    """Everything to decide now: stuck runs, due remembered decisions, new failures."""
    now = now or datetime.now(UTC)
    keep = keep or (lambda _name: True)
    result = ScanResult()
    stuck = detect_stuck(instance, conn, settings, now=now, keep=keep)
    if stuck:
        decided = decided_runs(conn, [c.run_id for c in stuck])
        result.candidates += [c for c in stuck if c.run_id not in decided]
    result.candidates += _due(instance, conn, keep)
    seen = {c.run_id for c in result.candidates}
    _read_failures(instance, conn, settings, scanner, now, keep, seen, result)
    return result


def _due(
    instance: DagsterInstance, conn: Connection, keep: Callable[[str], bool]
) -> list[Candidate]:
    """Remembered decisions to take again, as candidates (their cause is remembered too)."""
    due = [d for d in due_decisions(conn, limit=PAGE_SIZE) if keep(d.job_name)]
    if not due:
        return []
    ids = [d.parent_run_id for d in due]
    status = {
        r.dagster_run.run_id: r.dagster_run.status
        for r in instance.get_run_records(RunsFilter(run_ids=ids))
    }
    taken = recorded_parents(conn, ids) | _parents_with_child(instance, ids)
    # A hung run that was skipped is still STARTED: forget it, and detect_stuck finds it
    # again with its live pids. A run someone else recovered meanwhile is settled.
    forget_decisions(conn, [i for i in ids if status.get(i) == DagsterRunStatus.STARTED])
    settle_decisions(
        conn,
        [
            i
            for i in ids
            if i in taken
            or status.get(i) not in (DagsterRunStatus.FAILURE, DagsterRunStatus.STARTED)
        ],
    )
    return [
        _from_stored(d)
        for d in due
        if status.get(d.parent_run_id) == DagsterRunStatus.FAILURE and d.parent_run_id not in taken
    ]


def _from_stored(row: StoredDecision) -> Candidate:
    return Candidate(
        run_id=row.parent_run_id,
        root_run_id=row.root_run_id,
        job_name=row.job_name,
        status=DagsterRunStatus.FAILURE.value,
        reason=row.reason,
        detail=row.detail,
        tags=dict(row.tags),
        error_code=row.error_code,
        failed_at=row.failed_at,
    )


def _read_failures(
    instance: DagsterInstance,
    conn: Connection,
    settings: RecoverySettings,
    scanner: str,
    now: datetime,
    keep: Callable[[str], bool],
    seen: set[str],
    result: ScanResult,
) -> None:
    since = now - timedelta(seconds=settings.failed_lookback_s)
    young_after = now.timestamp() - OVERLAP_S
    position = failure_cursor(conn, scanner)
    safe = position
    held_back = False
    started = time.monotonic()
    while True:
        page = failure_page(instance, after_storage_id=position, since=since)
        result.pages += 1
        if not page.events:
            break
        position = page.last_storage_id
        for failure in page.events:
            if failure.timestamp > young_after:
                held_back = True
            if not held_back:
                safe = failure.storage_id
        ids = [i for i in page.run_ids() if i not in seen]
        decided = decided_runs(conn, ids)
        fresh = [i for i in ids if i not in decided]
        found = failed_candidates(instance, page, fresh, keep)
        seen.update(c.run_id for c in found)
        result.candidates += found
        if len(page.events) < PAGE_SIZE:
            break
        if (
            len(result.candidates) >= MAX_CANDIDATES
            or result.pages >= MAX_PAGES
            or time.monotonic() - started > TIME_BUDGET_S
        ):
            result.more = True
            break
    result.cursor = safe
