"""The sensor's side of keeping a running backfill open for orbit's retries.

``dagster_io.backfill_retry`` explains the protocol: Dagster's backfill daemon does not end a
backfill while one of its FAILURE runs says ``dagster/will_retry=true`` and has no
``dagster/auto_retry_run_id`` yet. Each recovery pass (``cycle.run_cycle`` calls
``settle_backfill_runs`` after the pass's decisions are stored) makes the tags say what orbit
will do, for the runs of every running backfill:

- a run in progress (STARTING / STARTED) not tagged yet is tagged ``will_retry=true``: it may
  fail outside a row step (which tags at its start) or before the sensor's next tick;
- a FAILURE run that is not linked to its retry yet gets its verdict:
  * a retry exists (orbit's recovery row names it, or someone re-executed it from the UI):
    ``auto_retry_run_id`` is set, and the backfill waits for that run instead;
  * orbit will not recover it (held: error never retried, effects in doubt, attempt budget
    used; skipped: recovery off everywhere, for the job, or the group cancelled/abandoned;
    or it failed longer ago than the sensor looks back): ``will_retry=false``, so the
    backfill can end COMPLETED_FAILED instead of waiting forever;
  * orbit will retry it later (backoff, a launch error it retries): ``will_retry=true``;
  * not decided yet: left as it is; the next pass decides.

The cost per pass is one query for the running backfills, two per running backfill, and a
few per failed run not settled yet (a settled run costs nothing more than being listed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from sqlalchemy import Connection, Engine

from orbit_pipelines.dagster_io.backfill_retry import recovery_switched_off_by_tag
from orbit_pipelines.recovery import dagster_private as dp
from orbit_pipelines.recovery.child_run import mark_retried
from orbit_pipelines.recovery.policy import switched_off
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.recoveries import auto_recovery_enabled, get_decision, get_recovery
from orbit_pipelines.tags import (
    AUTO_RETRY_RUN_ID_TAG,
    BACKFILL_TAG,
    PARENT_RUN_ID_TAG,
    WILL_RETRY_TAG,
    root_run_id_of,
)

_IN_PROGRESS = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
# Decisions after which orbit launches nothing without a person.
_FINAL_NO = ("hold", "skip")


@dataclass(frozen=True)
class Verdict:
    """What orbit will do about one failed run of a running backfill."""

    kind: str  # retried | not_recovering | later | undecided
    why: str
    retry_run_id: str | None = None


def settle_backfill_runs(
    instance: DagsterInstance,
    engine: Engine,
    settings: RecoverySettings,
    *,
    keep: Callable[[str], bool] | None = None,
    log: Any = None,
) -> list[str]:
    """Make the runs of every running backfill say whether orbit will retry them; returns
    a line per tag written. ``keep`` limits it to the caller's jobs (the sensor's code
    location). Never raises: the backfill's bookkeeping must not stop a recovery pass."""
    log = log or logging.getLogger(__name__)
    keep = keep or (lambda _name: True)
    lines: list[str] = []
    try:
        backfills = instance.get_backfills(status=dp.BulkActionStatus.REQUESTED)
        with engine.connect() as conn:
            for backfill in backfills:
                lines += _hold_in_progress(instance, conn, backfill.backfill_id, keep)
                lines += _settle_failed(instance, conn, settings, backfill.backfill_id, keep)
    except Exception:
        log.exception("could not settle the backfill runs awaiting orbit's retry")
    for line in lines:
        log.info(line)
    return lines


def _hold_in_progress(
    instance: DagsterInstance, conn: Connection, backfill_id: str, keep: Callable[[str], bool]
) -> list[str]:
    runs = instance.get_runs(RunsFilter(tags={BACKFILL_TAG: backfill_id}, statuses=_IN_PROGRESS))
    todo = [
        r
        for r in runs
        if WILL_RETRY_TAG not in r.tags and keep(r.job_name) and not recovery_switched_off_by_tag(r)
    ]
    if not todo or not auto_recovery_enabled(conn):
        return []
    for run in todo:
        instance.add_run_tags(run.run_id, {WILL_RETRY_TAG: "true"})
    return [
        f"backfill {backfill_id}: run {r.run_id} ({r.status.value}) will be retried by orbit "
        "if it fails"
        for r in todo
    ]


def _settle_failed(
    instance: DagsterInstance,
    conn: Connection,
    settings: RecoverySettings,
    backfill_id: str,
    keep: Callable[[str], bool],
) -> list[str]:
    records = instance.get_run_records(
        RunsFilter(tags={BACKFILL_TAG: backfill_id}, statuses=[DagsterRunStatus.FAILURE])
    )
    lines: list[str] = []
    for record in records:
        run = record.dagster_run
        will = run.tags.get(WILL_RETRY_TAG)
        if AUTO_RETRY_RUN_ID_TAG in run.tags or will == "false" or not keep(run.job_name):
            continue  # settled: the backfill waits for the retry run, or for nothing
        verdict = verdict_for(instance, conn, settings, run, record.end_time)
        if verdict.kind == "retried" and verdict.retry_run_id:
            mark_retried(instance, run, verdict.retry_run_id)
            lines.append(
                f"backfill {backfill_id}: run {run.run_id} is retried by {verdict.retry_run_id}"
            )
        elif verdict.kind == "not_recovering":
            instance.add_run_tags(run.run_id, {WILL_RETRY_TAG: "false"})
            lines.append(
                f"backfill {backfill_id}: run {run.run_id} will not be retried ({verdict.why}); "
                "the backfill may end without it"
            )
        elif verdict.kind == "later" and will != "true":
            instance.add_run_tags(run.run_id, {WILL_RETRY_TAG: "true"})
            lines.append(
                f"backfill {backfill_id}: run {run.run_id} waits for orbit's retry ({verdict.why})"
            )
    return lines


def verdict_for(
    instance: DagsterInstance,
    conn: Connection,
    settings: RecoverySettings,
    run: DagsterRun,
    ended_at: float | None,
) -> Verdict:
    """What orbit will do about the failed ``run``, from what the recovery passes stored."""
    recovery = get_recovery(conn, run.run_id)
    if recovery is not None:
        if recovery.recovery_run_id:
            return Verdict("retried", f"recovery {recovery.status}", recovery.recovery_run_id)
        if recovery.status == "held":
            return Verdict("not_recovering", f"held: {recovery.detail}")
        return Verdict("later", f"recovery {recovery.status}")
    child = instance.get_run_ids(RunsFilter(tags={PARENT_RUN_ID_TAG: run.run_id}), limit=1)
    if child:
        return Verdict("retried", "re-executed", child[0])
    off = switched_off(conn, root_run_id_of(run), dict(run.tags))
    if off is not None:
        return Verdict("not_recovering", off)
    decision = get_decision(conn, run.run_id)
    if decision is not None:
        if decision.action in _FINAL_NO:
            return Verdict("not_recovering", decision.why)
        return Verdict("later", decision.why)
    if ended_at is not None:
        age_s = datetime.now(UTC).timestamp() - ended_at
        if age_s > settings.failed_lookback_s:
            return Verdict(
                "not_recovering", f"failed {age_s:.0f}s ago, before the sensor's lookback"
            )
    return Verdict("undecided", "no decision yet")
