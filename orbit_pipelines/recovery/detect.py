"""Find runs that need recovery: dead (worker gone), hung (no row progress), failed.

``detect`` reads Dagster's run storage and orbit's heartbeats and returns candidates, each
with a reason a person can read. It changes nothing: terminating and marking runs failed is
``settle.py``'s job, deciding is ``policy.py``'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    EventLogEntry,
    RunRecord,
    RunsFilter,
    RunStatusChangeRecordsFilter,
    deserialize_value,
)
from sqlalchemy import ARRAY, Connection, Text, any_, bindparam, select

if TYPE_CHECKING:
    from dagster import EventLogRecord
    from dagster_postgres import PostgresEventLogStorage
    from sqlalchemy import Select

from orbit_pipelines.recovery import dagster_private as dp
from orbit_pipelines.recovery.liveness import pid_alive, this_host
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.heartbeats import Heartbeat, heartbeats_for_runs
from orbit_pipelines.store.recoveries import recorded_parents
from orbit_pipelines.tags import PARENT_RUN_ID_TAG, root_run_id_of

ERROR_CODE = re.compile(r"\bE-\d{4}\b")
# settle.mark_failed starts its failure message with this, so that on the next tick a run we
# marked failed is still known to have been dead or hung rather than a plain failure.
MARK_PREFIX = "orbit_pipelines recovery: run is "

_FINISHED_STEP = ("SUCCESS", "FAILURE", "SKIPPED")
# RUN_FAILURE events read per page; every lookup about a page is one query for the page.
PAGE_SIZE = 200
# The listing (``detect``) reads bigger pages: it decides nothing, so a page is only as big
# as one IN list, and every page costs Dagster a fresh connection per read.
LISTING_PAGE = 1000
# The listing's second scan, of failures older than the sensor's lookback, reads at most
# this many RUN_FAILURE events (newest first): the person-facing listing must not grow with
# the whole history of the deployment, and the sensor never reads them at all.
OLDER_SCAN_EVENTS = 5 * LISTING_PAGE
# Run ids per batched event-log query (an IN list; Postgres plans it on idx_events_by_run_id).
_RUNS_PER_QUERY = 1000


@dataclass(frozen=True)
class Candidate:
    """A run that may need recovery, and why."""

    run_id: str
    root_run_id: str
    job_name: str
    status: str
    reason: str  # 'dead' | 'hung' | 'failed'
    detail: str
    tags: dict[str, str] = field(default_factory=dict)
    error_code: str | None = None
    failed_at: datetime | None = None
    pids: tuple[tuple[str, int], ...] = ()  # (host, pid) of the steps still running


def detect(
    instance: DagsterInstance,
    conn: Connection,
    settings: RecoverySettings,
    *,
    now: datetime | None = None,
    job_filter: Callable[[str], bool] | None = None,
    records: dict[str, RunRecord] | None = None,
) -> list[Candidate]:
    """Every dead, hung or failed run that has no recovery launched or held yet.

    Read-only and complete (pages through every failure in the lookback window); what the
    CLI shows. The sensor uses ``recovery.scan`` instead, which remembers what it decided.
    ``records`` collects the failed runs' records read on the way, for a caller that reads
    the same runs next (the listing: a thousand run bodies are not deserialized twice).
    """
    now = now or datetime.now(UTC)
    keep = job_filter or (lambda _name: True)
    found = detect_stuck(instance, conn, settings, now=now, keep=keep)
    found += detect_failed(instance, conn, settings, now=now, keep=keep, records=records)
    return found


def _suspicious(beat: Heartbeat, settings: RecoverySettings, now: datetime, host: str) -> bool:
    """Could this beat be part of a dead or hung verdict? A run none of whose beats is
    suspicious is healthy whichever of its steps finished, so its step stats need no read."""
    if (now - beat.beat_at).total_seconds() > settings.heartbeat_timeout_s:
        return True
    if (now - beat.progress_at).total_seconds() > settings.stall_timeout_s:
        return True
    return beat.host == host and not pid_alive(beat.pid)


def detect_stuck(
    instance: DagsterInstance,
    conn: Connection,
    settings: RecoverySettings,
    *,
    now: datetime,
    keep: Callable[[str], bool],
) -> list[Candidate]:
    """STARTED runs whose worker is dead or whose rows stopped moving.

    Per tick: one read of the STARTED run ids and one of their heartbeats. Only runs with
    no beat or a stale one (or a local pid gone) are read further, all of them at once:
    their records, their step stats, and, for runs with no beat that started longer ago
    than the start grace, their last events (one query each).
    """
    # Ids first (no run bodies to deserialize): a run whose beats all look healthy is
    # healthy, and costs nothing more.
    run_ids = instance.get_run_ids(RunsFilter(statuses=[DagsterRunStatus.STARTED]), limit=1000)
    if not run_ids:
        return []
    beats: dict[str, list[Heartbeat]] = {}
    for beat in heartbeats_for_runs(conn, run_ids):
        beats.setdefault(beat.run_id, []).append(beat)
    host = this_host()
    doubtful = [
        run_id
        for run_id in run_ids
        if not beats.get(run_id) or any(_suspicious(b, settings, now, host) for b in beats[run_id])
    ]
    if not doubtful:
        return []
    records = [
        r
        for r in instance.get_run_records(RunsFilter(run_ids=doubtful))
        if r.dagster_run.status == DagsterRunStatus.STARTED and keep(r.dagster_run.job_name)
    ]
    # Step stats of the runs with beats, last events of the silent ones: one query each.
    with_beats = [r.dagster_run.run_id for r in records if beats.get(r.dagster_run.run_id)]
    stats = step_states_for_runs(instance, with_beats)
    silent = [
        r.dagster_run.run_id
        for r in records
        if not beats.get(r.dagster_run.run_id) and _recent(r, now) > settings.start_grace_s
    ]
    last = last_events(instance, silent)
    found: list[Candidate] = []
    for record in records:
        run = record.dagster_run
        run_beats = beats.get(run.run_id, [])
        if not run_beats and _recent(record, now) <= settings.start_grace_s:
            continue  # its last event is no older than its start: not silent long enough
        finished = {s.step_key for s in stats.get(run.run_id, []) if s.status in _FINISHED_STEP}
        active = [b for b in run_beats if b.step_key not in finished]
        verdict = (
            _judge_heartbeats(active, settings, now, host)
            if active
            else _judge_silence(last.get(run.run_id), settings, now)
        )
        if verdict is None:
            continue
        reason, detail = verdict
        found.append(
            Candidate(
                run_id=run.run_id,
                root_run_id=root_run_id_of(run),
                job_name=run.job_name,
                status=run.status.value,
                reason=reason,
                detail=detail,
                tags=dict(run.tags),
                pids=tuple((b.host, b.pid) for b in active),
            )
        )
    return found


def _recent(record: RunRecord, now: datetime) -> float:
    """Seconds since the run's newest known moment (start or last status change)."""
    moments = [_utc(record.update_timestamp).timestamp()]
    if record.start_time is not None:
        moments.append(record.start_time)
    return now.timestamp() - max(moments)


def _utc(value: datetime) -> datetime:
    # Dagster stores naive UTC timestamps.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _judge_heartbeats(
    active: list[Heartbeat], settings: RecoverySettings, now: datetime, host: str
) -> tuple[str, str] | None:
    local = [b for b in active if b.host == host]
    gone = [b for b in local if not pid_alive(b.pid)]
    if gone and len(gone) == len(active):
        steps = ", ".join(f"{b.step_key} (pid {b.pid})" for b in gone)
        return "dead", f"worker process gone on {host}: {steps}"
    newest = max(b.beat_at for b in active)
    silent_s = (now - newest).total_seconds()
    remote = [b for b in active if b.host != host]
    if silent_s > settings.heartbeat_timeout_s and len(remote) + len(gone) == len(active):
        hosts = ", ".join(sorted({b.host for b in active}))
        return "dead", (
            f"no heartbeat for {silent_s:.0f}s (timeout {settings.heartbeat_timeout_s:.0f}s) "
            f"from {hosts}"
        )
    progress = max(b.progress_at for b in active)
    stalled_s = (now - progress).total_seconds()
    if stalled_s > settings.stall_timeout_s:
        steps = ", ".join(f"{b.step_key} at {b.rows_done} rows" for b in active)
        return "hung", (
            f"worker alive but no row progress for {stalled_s:.0f}s "
            f"(stall timeout {settings.stall_timeout_s:.0f}s): {steps}"
        )
    return None


def _judge_silence(
    last: EventLogEntry | None, settings: RecoverySettings, now: datetime
) -> tuple[str, str] | None:
    if last is None:
        return None
    quiet_s = (now - datetime.fromtimestamp(last.timestamp, UTC)).total_seconds()
    if quiet_s > settings.start_grace_s:
        return "dead", (
            f"no heartbeat ever and no Dagster event for {quiet_s:.0f}s "
            f"(start grace {settings.start_grace_s:.0f}s)"
        )
    return None


def _batched_storage(instance: DagsterInstance) -> PostgresEventLogStorage | None:
    # Imported here: half a second of imports every `orbit` command would pay, where an
    # instance on Postgres has imported it already.
    from dagster_postgres import PostgresEventLogStorage

    storage = instance.event_log_storage
    return storage if isinstance(storage, PostgresEventLogStorage) else None


def _any(values: list[str]) -> Any:
    """``= ANY(%(ids)s::text[])``: one array parameter where ``IN`` binds (and SQLAlchemy
    compiles) one per run id; Postgres still walks idx_events_by_run_id per id."""
    return any_(bindparam(None, values, type_=ARRAY(Text)))


def _chunks(ids: Sequence[str]) -> list[list[str]]:
    return [list(ids[i : i + _RUNS_PER_QUERY]) for i in range(0, len(ids), _RUNS_PER_QUERY)]


def run_events(
    instance: DagsterInstance,
    run_ids: Sequence[str],
    event_types: Iterable[DagsterEventType],
    *,
    steps_only: bool = False,
) -> dict[str, list[EventLogEntry]]:
    """The events of these types of every run in ``run_ids``, oldest first per run: one
    query per thousand runs where Dagster's public API reads one run at a time
    (``all_logs``). ``steps_only`` keeps events that carry a step key (as Dagster's own step
    stats query does). On an event storage other than Postgres: one ``all_logs`` per run."""
    ids = sorted(set(run_ids))
    found: dict[str, list[EventLogEntry]] = {run_id: [] for run_id in ids}
    types = set(event_types)
    storage = _batched_storage(instance)
    if storage is None:
        for run_id in ids:
            found[run_id] = list(instance.all_logs(run_id, of_type=types))
        return found
    table = dp.SqlEventLogStorageTable
    for chunk in _chunks(ids):
        query = (
            select(table.c.run_id, table.c.event)
            .where(
                table.c.run_id == _any(chunk),
                table.c.dagster_event_type.in_(sorted(t.value for t in types)),
            )
            .order_by(table.c.id.asc())
        )
        if steps_only:
            query = query.where(table.c.step_key.is_not(None))
        with storage.index_connection() as conn:
            rows = conn.execute(query).fetchall()
        for run_id, body in rows:
            found[run_id].append(deserialize_value(body, EventLogEntry))
    return found


@dataclass(frozen=True)
class StepState:
    """What recovery reads of a step's Dagster stats: its status (``SUCCESS``, ``FAILURE``,
    ``SKIPPED``, ``IN_PROGRESS``) and when it last started. The same values as
    ``get_run_step_stats`` gives for steps that started or ended (by the same rule: the
    run's last start, success, failure or skip event of the step decides)."""

    step_key: str
    status: str | None
    start_time: float | None


_STEP_STATES = {
    DagsterEventType.STEP_START.value: "IN_PROGRESS",
    DagsterEventType.STEP_SUCCESS.value: "SUCCESS",
    DagsterEventType.STEP_FAILURE.value: "FAILURE",
    DagsterEventType.STEP_SKIPPED.value: "SKIPPED",
}


def step_states_for_runs(
    instance: DagsterInstance, run_ids: Sequence[str]
) -> dict[str, list[StepState]]:
    """The step states of many runs in one query per thousand runs, reading only the
    event type and time columns of the step events (no event body to deserialize: at a
    thousand run groups, deserializing every step event was most of the command's time).
    Other event storages: ``get_run_step_stats`` per run."""
    ids = sorted(set(run_ids))
    storage = _batched_storage(instance)
    if storage is None:
        return {
            run_id: [
                StepState(s.step_key, s.status.value if s.status else None, s.start_time)
                for s in instance.get_run_step_stats(run_id)
            ]
            for run_id in ids
        }
    table = dp.SqlEventLogStorageTable
    found: dict[str, dict[str, StepState]] = {run_id: {} for run_id in ids}
    for chunk in _chunks(ids):
        query = (
            select(table.c.run_id, table.c.step_key, table.c.dagster_event_type, table.c.timestamp)
            .where(
                table.c.run_id == _any(chunk),
                table.c.step_key.is_not(None),
                table.c.dagster_event_type.in_(sorted(_STEP_STATES)),
            )
            .order_by(table.c.id.asc())
        )
        with storage.index_connection() as conn:
            rows = conn.execute(query).fetchall()
        for run_id, step_key, event_type, at in rows:
            steps = found[run_id]
            before = steps.get(step_key)
            start = before.start_time if before else None
            if event_type == DagsterEventType.STEP_START.value:
                # Dagster stores naive UTC (its own read does the same conversion).
                start = at.replace(tzinfo=UTC).timestamp()
            steps[step_key] = StepState(step_key, _STEP_STATES[event_type], start)
    return {run_id: list(steps.values()) for run_id, steps in found.items()}


def last_events(instance: DagsterInstance, run_ids: Sequence[str]) -> dict[str, EventLogEntry]:
    """The newest event of each run (any type), one query per thousand runs."""
    return _edge_events(instance, run_ids, newest=True)


def first_events(
    instance: DagsterInstance, run_ids: Sequence[str], event_type: DagsterEventType
) -> dict[str, EventLogEntry]:
    """The oldest event of ``event_type`` of each run, one query per thousand runs (a run
    with a hundred failed shards costs one event body, not a hundred)."""
    return _edge_events(instance, run_ids, newest=False, event_type=event_type)


def _edge_events(
    instance: DagsterInstance,
    run_ids: Sequence[str],
    *,
    newest: bool,
    event_type: DagsterEventType | None = None,
) -> dict[str, EventLogEntry]:
    ids = sorted(set(run_ids))
    storage = _batched_storage(instance)
    if not ids:
        return {}
    found: dict[str, EventLogEntry] = {}
    if storage is None:
        for run_id in ids:
            if event_type is None:
                records = instance.get_records_for_run(run_id, limit=1, ascending=not newest)
                entries = [r.event_log_entry for r in records.records]
            else:
                entries = list(instance.all_logs(run_id, of_type=event_type))
                entries = entries[-1:] if newest else entries[:1]
            if entries:
                found[run_id] = entries[0]
        return found
    table = dp.SqlEventLogStorageTable
    for chunk in _chunks(ids):
        # DISTINCT ON walks idx_events_by_run_id (run_id, id) once per run.
        query = (
            select(table.c.run_id, table.c.event)
            .where(table.c.run_id == _any(chunk))
            .distinct(table.c.run_id)
            .order_by(table.c.run_id, table.c.id.desc() if newest else table.c.id.asc())
        )
        if event_type is not None:
            query = query.where(table.c.dagster_event_type == event_type.value)
        with storage.index_connection() as conn:
            for run_id, body in conn.execute(query).fetchall():
                found[run_id] = deserialize_value(body, EventLogEntry)
    return found


@dataclass(frozen=True)
class FailureEvent:
    """One RUN_FAILURE event as the cursor needs it (no event body)."""

    storage_id: int
    run_id: str
    timestamp: float


@dataclass(frozen=True)
class FailurePage:
    """One page of Dagster's RUN_FAILURE events, oldest first."""

    events: list[FailureEvent]

    @property
    def last_storage_id(self) -> int | None:
        """Where the next page starts."""
        return self.events[-1].storage_id if self.events else None

    def run_ids(self) -> list[str]:
        """The failed runs of the page, each once, in event order."""
        return list(dict.fromkeys(e.run_id for e in self.events))


def failure_page(
    instance: DagsterInstance,
    *,
    after_storage_id: int | None,
    since: datetime,
    limit: int = PAGE_SIZE,
) -> FailurePage:
    """RUN_FAILURE events after ``after_storage_id`` (and after ``since``), oldest first.

    Storage ids are assigned by Postgres, so unlike a run's update timestamp (a worker's
    clock) they do not depend on the hosts' clocks agreeing. On Postgres this reads the
    id, run id and time columns only (the filter ``fetch_run_status_changes`` applies,
    without deserializing a thousand event bodies nobody reads); elsewhere it is that call.
    """
    storage = _batched_storage(instance)
    if storage is None:
        result = instance.fetch_run_status_changes(
            RunStatusChangeRecordsFilter(
                DagsterEventType.RUN_FAILURE,
                after_storage_id=after_storage_id,
                after_timestamp=since.timestamp(),
            ),
            limit=limit,
            ascending=True,
        )
        return _records_page(result.records)
    table = dp.SqlEventLogStorageTable
    query = (
        select(table.c.id, table.c.run_id, table.c.timestamp)
        .where(
            table.c.dagster_event_type == DagsterEventType.RUN_FAILURE.value,
            # Dagster stores naive UTC times.
            table.c.timestamp > since.astimezone(UTC).replace(tzinfo=None),
        )
        .order_by(table.c.id.asc())
        .limit(limit)
    )
    if after_storage_id is not None:
        query = query.where(table.c.id > after_storage_id)
    return _query_page(storage, query)


def failure_page_before(
    instance: DagsterInstance,
    *,
    before_storage_id: int | None,
    until: datetime,
    limit: int = LISTING_PAGE,
) -> FailurePage:
    """RUN_FAILURE events before ``before_storage_id`` and at or before ``until``, newest
    first: ``failure_page`` read backwards, for the failures older than the lookback."""
    storage = _batched_storage(instance)
    if storage is None:
        result = instance.fetch_run_status_changes(
            RunStatusChangeRecordsFilter(
                DagsterEventType.RUN_FAILURE,
                before_storage_id=before_storage_id,
                # Dagster's filter is exclusive; the lookback's edge belongs to this side.
                before_timestamp=until.timestamp() + 1e-6,
            ),
            limit=limit,
            ascending=False,
        )
        return _records_page(result.records)
    table = dp.SqlEventLogStorageTable
    query = (
        select(table.c.id, table.c.run_id, table.c.timestamp)
        .where(
            table.c.dagster_event_type == DagsterEventType.RUN_FAILURE.value,
            table.c.timestamp <= until.astimezone(UTC).replace(tzinfo=None),
        )
        .order_by(table.c.id.desc())
        .limit(limit)
    )
    if before_storage_id is not None:
        query = query.where(table.c.id < before_storage_id)
    return _query_page(storage, query)


def _records_page(records: Sequence[EventLogRecord]) -> FailurePage:
    return FailurePage(
        [
            FailureEvent(r.storage_id, r.event_log_entry.run_id, r.event_log_entry.timestamp)
            for r in records
        ]
    )


def _query_page(storage: PostgresEventLogStorage, query: Select[Any]) -> FailurePage:
    with storage.index_connection() as conn:
        rows = conn.execute(query).fetchall()
    return FailurePage(
        [
            FailureEvent(int(storage_id), run_id, at.replace(tzinfo=UTC).timestamp())
            for storage_id, run_id, at in rows
        ]
    )


@dataclass(frozen=True)
class OlderFailures:
    """Failed runs older than the sensor's lookback that nobody decided on or re-executed.

    ``complete`` is False when the scan stopped at ``OLDER_SCAN_EVENTS`` events with more
    left: older failures than those were not looked at."""

    candidates: list[Candidate]
    scanned: int
    complete: bool


def detect_failed_before_lookback(
    instance: DagsterInstance,
    conn: Connection,
    settings: RecoverySettings,
    *,
    now: datetime | None = None,
    keep: Callable[[str], bool] | None = None,
    records: dict[str, RunRecord] | None = None,
    max_events: int = OLDER_SCAN_EVENTS,
) -> OlderFailures:
    """The failures the sensor will never see (they ended before ``failed_lookback_s``),
    newest first, for the person-facing listing only: the same filters as
    ``detect_failed`` (FAILURE now, no decision row, not re-executed by anyone), page by
    page with a cursor and a constant number of queries per page, at most ``max_events``
    RUN_FAILURE events. The sensor's tick does not call this."""
    now = now or datetime.now(UTC)
    keep = keep or (lambda _name: True)
    until = now - timedelta(seconds=settings.failed_lookback_s)
    found: list[Candidate] = []
    cursor: int | None = None
    scanned = 0
    while scanned < max_events:
        limit = min(LISTING_PAGE, max_events - scanned)
        page = failure_page_before(instance, before_storage_id=cursor, until=until, limit=limit)
        scanned += len(page.events)
        complete = len(page.events) < limit
        if page.events:
            cursor = page.events[-1].storage_id
            ids = page.run_ids()
            decided = recorded_parents(conn, ids)
            found += failed_candidates(
                instance, page, [i for i in ids if i not in decided], keep, records=records
            )
        if complete:
            return OlderFailures(found, scanned, True)
    more = failure_page_before(instance, before_storage_id=cursor, until=until, limit=1)
    return OlderFailures(found, scanned, not more.events)


def detect_failed(
    instance: DagsterInstance,
    conn: Connection,
    settings: RecoverySettings,
    *,
    now: datetime,
    keep: Callable[[str], bool],
    records: dict[str, RunRecord] | None = None,
) -> list[Candidate]:
    """FAILURE runs with no recovery launched or held and no re-execution started by
    anyone: every one in the lookback window, page by page (a constant number of queries
    per page)."""
    since = now - timedelta(seconds=settings.failed_lookback_s)
    found: list[Candidate] = []
    cursor: int | None = None
    while True:
        page = failure_page(instance, after_storage_id=cursor, since=since, limit=LISTING_PAGE)
        if not page.events:
            return found
        cursor = page.last_storage_id
        ids = page.run_ids()
        decided = recorded_parents(conn, ids)
        found += failed_candidates(
            instance, page, [i for i in ids if i not in decided], keep, records=records
        )
        if len(page.events) < LISTING_PAGE:
            return found


def failed_candidates(
    instance: DagsterInstance,
    page: FailurePage,
    run_ids: Sequence[str],
    keep: Callable[[str], bool],
    *,
    records: dict[str, RunRecord] | None = None,
) -> list[Candidate]:
    """Candidates for those of ``run_ids`` that are FAILURE now, of a kept job, and that
    nobody re-executed yet: three Dagster reads for all of them (runs, children, causes).
    ``records`` collects the records read."""
    if not run_ids:
        return []
    read = {
        r.dagster_run.run_id: r for r in instance.get_run_records(RunsFilter(run_ids=list(run_ids)))
    }
    if records is not None:
        records.update(read)
    records = {
        run_id: r
        for run_id, r in read.items()
        if r.dagster_run.status == DagsterRunStatus.FAILURE and keep(r.dagster_run.job_name)
    }
    if not records:
        return []
    parents = _parents_with_child(instance, list(records))
    wanted = [records[i] for i in run_ids if i in records and i not in parents]
    causes = failure_causes(instance, wanted, page)
    found: list[Candidate] = []
    for rec in wanted:
        run = rec.dagster_run
        reason, detail, code = causes[run.run_id]
        found.append(
            Candidate(
                run_id=run.run_id,
                root_run_id=root_run_id_of(run),
                job_name=run.job_name,
                status=run.status.value,
                reason=reason,
                detail=detail,
                tags=dict(run.tags),
                error_code=code,
                failed_at=_failed_at(rec),
            )
        )
    return found


def _failed_at(rec: RunRecord) -> datetime:
    if rec.end_time is not None:
        return datetime.fromtimestamp(rec.end_time, UTC)
    return _utc(rec.update_timestamp)


def _parents_with_child(instance: DagsterInstance, run_ids: list[str]) -> set[str]:
    """Which of these runs somebody already re-executed (one query for all)."""
    children = instance.get_runs(RunsFilter(tags={PARENT_RUN_ID_TAG: run_ids}))
    return {c.tags[PARENT_RUN_ID_TAG] for c in children if PARENT_RUN_ID_TAG in c.tags}


def _has_child(instance: DagsterInstance, run_id: str) -> bool:
    return bool(_parents_with_child(instance, [run_id]))


def failure_causes(
    instance: DagsterInstance, records: Sequence[RunRecord], page: FailurePage | None = None
) -> dict[str, tuple[str, str, str | None]]:
    """``failure_cause`` for many runs, whatever their number: the first STEP_FAILURE of
    each in one read, and the RUN_FAILURE events of those without one in a second.
    (``page`` is accepted for callers that have one; the reads do not need it.)"""
    del page
    if not records:
        return {}
    ids = sorted({r.dagster_run.run_id for r in records})
    steps = first_step_failures(instance, ids)
    rest = [run_id for run_id in ids if run_id not in steps]
    run_failures = run_events(instance, rest, (DagsterEventType.RUN_FAILURE,)) if rest else {}
    return {run_id: _cause(steps.get(run_id), run_failures.get(run_id, [])) for run_id in ids}


def failure_cause(instance: DagsterInstance, run_id: str) -> tuple[str, str, str | None]:
    """(reason, detail, error code) of a failed run, read from its event log.

    The code is the first ``E-nnnn`` in the failing step's error (or its causes); none means
    an unexpected crash.
    """
    step = next(iter(instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)), None)
    if step is not None:
        return _cause(_step_failure(step), [])
    return _cause(None, list(instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)))


@dataclass(frozen=True)
class StepFailure:
    """What a cause needs of a STEP_FAILURE event: the step and its error's messages, the
    outermost first (the error, then its causes)."""

    step_key: str | None
    messages: tuple[str, ...]


def _step_failure(entry: EventLogEntry) -> StepFailure:
    event = entry.dagster_event
    data = event.step_failure_data if event is not None else None
    error = data.error if data is not None else None
    texts: list[str] = []
    while error is not None:
        texts.append(error.message)
        error = error.cause
    return StepFailure(event.step_key if event is not None else None, tuple(texts))


def _step_failure_from_json(body: str) -> StepFailure | None:
    """The same from the stored JSON, without building Dagster's objects: a STEP_FAILURE
    body holds the whole error with its stack traces, and deserializing a thousand of them
    was most of what `orbit check-interrupted` spent. None when the body is not shaped as
    expected (another Dagster version's serialization): the caller deserializes it."""
    try:
        data = json.loads(body)
        event = data["dagster_event"]
        specific = event["event_specific_data"]
        if (
            data.get("__class__") != "EventLogEntry"
            or event.get("__class__") != "DagsterEvent"
            or specific.get("__class__") != "StepFailureData"
        ):
            return None
        texts: list[str] = []
        error = specific["error"]
        while error is not None:
            if error.get("__class__") != "SerializableErrorInfo":
                return None
            message = error["message"]
            if not isinstance(message, str):
                return None
            texts.append(message)
            error = error["cause"]
        step_key = event["step_key"]
        return StepFailure(step_key if isinstance(step_key, str) else None, tuple(texts))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def first_step_failures(
    instance: DagsterInstance, run_ids: Sequence[str]
) -> dict[str, StepFailure]:
    """The first STEP_FAILURE of each run, one query per thousand runs."""
    ids = sorted(set(run_ids))
    storage = _batched_storage(instance)
    if not ids:
        return {}
    if storage is None:
        return {
            run_id: _step_failure(entry)
            for run_id, entry in first_events(instance, ids, DagsterEventType.STEP_FAILURE).items()
        }
    table = dp.SqlEventLogStorageTable
    found: dict[str, StepFailure] = {}
    for chunk in _chunks(ids):
        query = (
            select(table.c.run_id, table.c.event)
            .where(
                table.c.run_id == _any(chunk),
                table.c.dagster_event_type == DagsterEventType.STEP_FAILURE.value,
            )
            .distinct(table.c.run_id)
            .order_by(table.c.run_id, table.c.id.asc())
        )
        with storage.index_connection() as conn:
            for run_id, body in conn.execute(query).fetchall():
                found[run_id] = _step_failure_from_json(body) or _step_failure(
                    deserialize_value(body, EventLogEntry)
                )
    return found


def _cause(
    step_failure: StepFailure | None, run_failures: Sequence[EventLogEntry]
) -> tuple[str, str, str | None]:
    if step_failure is not None:
        texts = step_failure.messages
        code = next((m.group(0) for t in texts if (m := ERROR_CODE.search(t))), None)
        step = step_failure.step_key or "?"
        first_line = (texts[0].strip().splitlines() or ["no message"])[0] if texts else ""
        return "failed", f"step {step} failed: {first_line}", code
    for entry in run_failures:
        message = entry.dagster_event.message if entry.dagster_event else None
        message = message or entry.user_message or ""
        if message.startswith(MARK_PREFIX):
            rest = message[len(MARK_PREFIX) :]
            reason, _, detail = rest.partition(": ")
            if reason in ("dead", "hung"):
                return reason, detail, None
        if message:
            return "failed", f"run failed with no step failure: {message.splitlines()[0]}", None
    return "failed", "run failed with no recorded cause", None
