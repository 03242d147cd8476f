"""One recovery pass: record finished recoveries, detect, settle, decide, launch or hold.

The sensor calls ``run_cycle`` every tick; ``orbit recover`` can call it once. It takes a
logger and returns every decision, so each caller shows them its own way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagster import DagsterInstance, DagsterRunStatus, JobDefinition
from sqlalchemy import Engine

from orbit_pipelines.recovery.detect import Candidate, detect
from orbit_pipelines.recovery.launch import launch
from orbit_pipelines.recovery.policy import decide
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.recovery.settle import mark_failed, terminate_hung
from orbit_pipelines.store.recoveries import (
    claim_recovery,
    mark_finished,
    stale_launches,
    unfinished_recoveries,
)

_OUTCOME = {
    DagsterRunStatus.SUCCESS: "succeeded",
    DagsterRunStatus.FAILURE: "failed",
    DagsterRunStatus.CANCELED: "failed",
}


@dataclass(frozen=True)
class Outcome:
    """One decision of a pass, for logs and for the caller's summary."""

    run_id: str
    reason: str
    action: str  # launched | waiting | held | skipped | lost_race | deferred | finished | error
    message: str
    recovery_run_id: str | None = None

    def line(self) -> str:
        """One log line."""
        target = f" -> {self.recovery_run_id}" if self.recovery_run_id else ""
        return f"{self.action}: run {self.run_id} ({self.reason}){target}: {self.message}"


def record_finished(instance: DagsterInstance, engine: Engine) -> list[Outcome]:
    """Close recoveries whose recovery run ended: status, outcome and finished time."""
    done: list[Outcome] = []
    with engine.connect() as conn:
        open_rows = unfinished_recoveries(conn)
    for row in open_rows:
        run = instance.get_run_by_id(row.recovery_run_id) if row.recovery_run_id else None
        if run is None or run.status not in _OUTCOME:
            continue
        with engine.begin() as conn:
            changed = mark_finished(
                conn,
                parent_run_id=row.parent_run_id,
                status=_OUTCOME[run.status],
                outcome=run.status.value,
            )
        if changed:
            done.append(
                Outcome(
                    row.parent_run_id,
                    row.reason,
                    "finished",
                    f"recovery run ended {run.status.value}",
                    row.recovery_run_id,
                )
            )
    return done


def finish_stale_launches(
    instance: DagsterInstance,
    engine: Engine,
    settings: RecoverySettings,
    decided_by: str,
    job_lookup: Callable[[str], JobDefinition | None] | None = None,
) -> list[Outcome]:
    """Take over launches whose launcher crashed; ``launch`` reuses the run it may have made."""
    with engine.connect() as conn:
        stale = stale_launches(conn, settings.launch_takeover_s)
    done: list[Outcome] = []
    for row in stale:
        try:
            result = launch(
                instance,
                engine,
                row.parent_run_id,
                decided_by=decided_by,
                reason=row.reason,
                detail=row.detail,
                attempt=row.attempt,
                job_def=job_lookup(row.job_name) if job_lookup else None,
                settings=settings,
            )
        except Exception as error:
            done.append(Outcome(row.parent_run_id, row.reason, "error", f"takeover: {error}"))
            continue
        action = "launched" if result.launched else "lost_race"
        done.append(
            Outcome(
                row.parent_run_id,
                row.reason,
                action,
                f"took over a stale launch: {result.message}",
                result.recovery_run_id,
            )
        )
    return done


def run_cycle(
    instance: DagsterInstance,
    engine: Engine,
    settings: RecoverySettings,
    *,
    decided_by: str,
    job_filter: Callable[[str], bool] | None = None,
    job_lookup: Callable[[str], JobDefinition | None] | None = None,
    log: Any = None,
    max_launches: int | None = None,
) -> list[Outcome]:
    """Detect and handle every run that needs recovery; returns what was decided.

    ``max_launches`` caps the launches of this pass (e.g. ``orbit recover --max``); runs
    beyond it are reported 'deferred' and left for a later pass.
    """
    log = log or logging.getLogger(__name__)
    outcomes = record_finished(instance, engine)
    outcomes += finish_stale_launches(instance, engine, settings, decided_by, job_lookup)
    with engine.connect() as conn:
        candidates = detect(instance, conn, settings, job_filter=job_filter)
    launched = 0
    for candidate in candidates:
        if max_launches is not None and launched >= max_launches:
            outcomes.append(
                Outcome(candidate.run_id, candidate.reason, "deferred", "launch limit reached")
            )
            continue
        try:
            outcome = _handle(instance, engine, settings, candidate, decided_by, job_lookup)
            launched += outcome.action == "launched"
        except Exception as error:  # one bad run must not stop the others' recovery
            log.exception("recovery of run %s failed", candidate.run_id)
            outcome = Outcome(
                candidate.run_id, candidate.reason, "error", f"{type(error).__name__}: {error}"
            )
        outcomes.append(outcome)
    for outcome in outcomes:
        log.info(outcome.line())
    return outcomes


def _handle(
    instance: DagsterInstance,
    engine: Engine,
    settings: RecoverySettings,
    candidate: Candidate,
    decided_by: str,
    job_lookup: Callable[[str], JobDefinition | None] | None,
) -> Outcome:
    with engine.connect() as conn:
        decision = decide(conn, candidate, settings)
    if decision.action == "skip":
        if candidate.reason == "dead":
            # Even with recovery off, a dead run must not pretend to be running.
            mark_failed(instance, candidate.run_id, candidate.reason, candidate.detail)
        return Outcome(candidate.run_id, candidate.reason, "skipped", decision.why)
    detail = candidate.detail
    if candidate.reason == "hung":
        detail = f"{detail}; {terminate_hung(instance, candidate, settings)}"
    if candidate.reason in ("dead", "hung"):
        mark_failed(instance, candidate.run_id, candidate.reason, detail)
    if decision.action == "wait":
        return Outcome(candidate.run_id, candidate.reason, "waiting", decision.why)
    if decision.action == "hold":
        with engine.begin() as conn:
            row = claim_recovery(
                conn,
                parent_run_id=candidate.run_id,
                root_run_id=candidate.root_run_id,
                job_name=candidate.job_name,
                attempt=decision.attempt,
                reason=candidate.reason,
                detail=f"{detail} | held: {decision.why}",
                decided_by=decided_by,
                status="held",
            )
        action = "held" if row is not None else "lost_race"
        return Outcome(candidate.run_id, candidate.reason, action, decision.why)
    result = launch(
        instance,
        engine,
        candidate.run_id,
        decided_by=decided_by,
        reason=candidate.reason,
        detail=detail,
        attempt=decision.attempt,
        job_def=job_lookup(candidate.job_name) if job_lookup else None,
        settings=settings,
    )
    return Outcome(
        candidate.run_id,
        candidate.reason,
        "launched" if result.launched else "lost_race",
        f"{decision.why}: {result.message}",
        result.recovery_run_id,
    )
