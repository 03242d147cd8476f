"""Find runs that need recovery: dead (worker gone), hung (no row progress), failed.

``detect`` reads Dagster's run storage and orbit's heartbeats and returns candidates, each
with a reason a person can read. It changes nothing: terminating and marking runs failed is
``settle.py``'s job, deciding is ``policy.py``'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from sqlalchemy import Connection

from orbit_pipelines.recovery.liveness import pid_alive, this_host
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.heartbeats import Heartbeat, heartbeats_for_runs
from orbit_pipelines.store.recoveries import recorded_parents

ERROR_CODE = re.compile(r"\bE-\d{4}\b")
PARENT_RUN_TAG = "dagster/parent_run_id"
# settle.mark_failed starts its failure message with this, so that on the next tick a run we
# marked failed is still known to have been dead or hung rather than a plain failure.
MARK_PREFIX = "orbit_pipelines recovery: run is "

_FINISHED_STEP = ("SUCCESS", "FAILURE", "SKIPPED")


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
) -> list[Candidate]:
    """Every dead, hung or failed run that has no recovery decision yet."""
    now = now or datetime.now(UTC)
    keep = job_filter or (lambda _name: True)
    found = detect_stuck(instance, conn, settings, now=now, keep=keep)
    found += detect_failed(instance, conn, settings, now=now, keep=keep)
    return found


def detect_stuck(
    instance: DagsterInstance,
    conn: Connection,
    settings: RecoverySettings,
    *,
    now: datetime,
    keep: Callable[[str], bool],
) -> list[Candidate]:
    """STARTED runs whose worker is dead or whose rows stopped moving."""
    runs = [
        r
        for r in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]), limit=1000)
        if keep(r.job_name)
    ]
    if not runs:
        return []
    beats: dict[str, list[Heartbeat]] = {}
    for beat in heartbeats_for_runs(conn, [r.run_id for r in runs]):
        beats.setdefault(beat.run_id, []).append(beat)
    host = this_host()
    found: list[Candidate] = []
    for run in runs:
        finished = {
            s.step_key
            for s in instance.get_run_step_stats(run.run_id)
            if s.status is not None and s.status.value in _FINISHED_STEP
        }
        active = [b for b in beats.get(run.run_id, []) if b.step_key not in finished]
        verdict = (
            _judge_heartbeats(active, settings, now, host)
            if active
            else _judge_silence(instance, run.run_id, settings, now)
        )
        if verdict is None:
            continue
        reason, detail = verdict
        found.append(
            Candidate(
                run_id=run.run_id,
                root_run_id=run.root_run_id or run.run_id,
                job_name=run.job_name,
                status=run.status.value,
                reason=reason,
                detail=detail,
                tags=dict(run.tags),
                pids=tuple((b.host, b.pid) for b in active),
            )
        )
    return found


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
    instance: DagsterInstance, run_id: str, settings: RecoverySettings, now: datetime
) -> tuple[str, str] | None:
    records = instance.get_records_for_run(run_id, limit=1, ascending=False).records
    if not records:
        return None
    last = datetime.fromtimestamp(records[0].event_log_entry.timestamp, UTC)
    quiet_s = (now - last).total_seconds()
    if quiet_s > settings.start_grace_s:
        return "dead", (
            f"no heartbeat ever and no Dagster event for {quiet_s:.0f}s "
            f"(start grace {settings.start_grace_s:.0f}s)"
        )
    return None


def detect_failed(
    instance: DagsterInstance,
    conn: Connection,
    settings: RecoverySettings,
    *,
    now: datetime,
    keep: Callable[[str], bool],
) -> list[Candidate]:
    """FAILURE runs with no recovery decision yet and no re-execution started by anyone."""
    since = now - timedelta(seconds=settings.failed_lookback_s)
    records = [
        rec
        for rec in instance.get_run_records(
            RunsFilter(statuses=[DagsterRunStatus.FAILURE], updated_after=since), limit=500
        )
        if keep(rec.dagster_run.job_name)
    ]
    decided = recorded_parents(conn, [rec.dagster_run.run_id for rec in records])
    found: list[Candidate] = []
    for rec in records:
        run = rec.dagster_run
        if run.run_id in decided or _has_child(instance, run.run_id):
            continue
        reason, detail, code = failure_cause(instance, run.run_id)
        failed_at = (
            datetime.fromtimestamp(rec.end_time, UTC)
            if rec.end_time is not None
            else rec.update_timestamp.astimezone(UTC)
        )
        found.append(
            Candidate(
                run_id=run.run_id,
                root_run_id=run.root_run_id or run.run_id,
                job_name=run.job_name,
                status=run.status.value,
                reason=reason,
                detail=detail,
                tags=dict(run.tags),
                error_code=code,
                failed_at=failed_at,
            )
        )
    return found


def _has_child(instance: DagsterInstance, run_id: str) -> bool:
    return bool(instance.get_run_ids(RunsFilter(tags={PARENT_RUN_TAG: run_id}), limit=1))


def failure_cause(instance: DagsterInstance, run_id: str) -> tuple[str, str, str | None]:
    """(reason, detail, error code) of a failed run, read from its event log.

    The code is the first ``E-nnnn`` in the failing step's error (or its causes); none means
    an unexpected crash.
    """
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        data = event.step_failure_data if event is not None else None
        error = data.error if data is not None else None
        texts: list[str] = []
        while error is not None:
            texts.append(error.message)
            error = error.cause
        code = next((m.group(0) for t in texts if (m := ERROR_CODE.search(t))), None)
        step = event.step_key if event is not None else "?"
        first_line = (texts[0].strip().splitlines() or ["no message"])[0] if texts else ""
        return "failed", f"step {step} failed: {first_line}", code
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE):
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
