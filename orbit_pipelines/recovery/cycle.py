"""One recovery pass: record finished recoveries, detect, settle, decide, launch or hold.

The sensor calls ``run_cycle`` every tick; ``orbit recover`` can call it once. It takes a
logger and returns every decision, so each caller shows them its own way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from dagster import DagsterInstance, DagsterRunStatus, JobDefinition, RunsFilter
from sqlalchemy import Engine

from orbit_pipelines.recovery.announce import (
    announce_finished,
    announce_hold,
    announce_not_recovering,
)
from orbit_pipelines.recovery.backfill_hold import settle_backfill_runs
from orbit_pipelines.recovery.detect import Candidate
from orbit_pipelines.recovery.launch import launch, recovery_run_id_for
from orbit_pipelines.recovery.policy import Decision, decide_many
from orbit_pipelines.recovery.scan import TIME_BUDGET_S, scan
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.recovery.settle import mark_failed, terminate_hung
from orbit_pipelines.store.recoveries import (
    claim_many,
    drop_cancelled_launch,
    group_control,
    mark_finished,
    save_decisions,
    save_failure_cursor,
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
    wanted = [row.recovery_run_id for row in open_rows if row.recovery_run_id]
    runs = {r.run_id: r for r in instance.get_runs(RunsFilter(run_ids=wanted))} if wanted else {}
    for row in open_rows:
        run = runs.get(row.recovery_run_id) if row.recovery_run_id else None
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
            announce_finished(instance, run, row.parent_run_id)
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
    launched_by: Mapping[str, str] | None = None,
) -> list[Outcome]:
    """Take over launches whose launcher crashed; ``launch`` reuses the run it may have made."""
    with engine.connect() as conn:
        stale = stale_launches(conn, settings.launch_takeover_s)
        controls = {row.root_run_id: group_control(conn, row.root_run_id) for row in stale}
    done: list[Outcome] = []
    for row in stale:
        control = controls.get(row.root_run_id)
        if (
            control is not None
            and control.abandoned_at is not None
            and instance.get_run_by_id(recovery_run_id_for(row.parent_run_id)) is None
        ):
            # `orbit cancel` came after the claim and before the run existed: a person said
            # stop, so the launch is not finished for them (a run that exists was cancelled
            # with the group; taking over only links it). Undone as if cancelled before the
            # decision: a backfill waiting for it may end, `orbit cancel --undo` makes it
            # due again, `orbit resume` launches it.
            why = (
                f"run group {row.root_run_id} was cancelled (orbit cancel) before its recovery "
                "run was created; not launched"
            )
            with engine.begin() as conn:
                dropped = drop_cancelled_launch(conn, parent_run_id=row.parent_run_id, why=why)
            if dropped:
                done.append(Outcome(row.parent_run_id, row.reason, "skipped", why))
            continue
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
                launched_by=launched_by,
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
    scanner: str | None = None,
    launched_by: Mapping[str, str] | None = None,
) -> list[Outcome]:
    """Detect and handle every run that needs recovery; returns what was decided.

    ``launched_by``: the tags that name the sensor launching the recovery runs in the UI
    (``announce.launched_by_tags``). Every launch, hold and "not recovering" is also written
    into the event log of the run it is about (``announce``).

    ``scanner`` names the failure cursor (default ``decided_by``); give each job filter its
    own. Every decision is remembered (``orbit.recovery_decisions``) before the cursor
    moves. ``max_launches`` caps the launches of this pass (e.g. ``orbit recover --max``);
    runs beyond it, or beyond the pass's time budget, are reported 'deferred' and come back
    on the next pass.
    """
    log = log or logging.getLogger(__name__)
    started = time.monotonic()
    outcomes = record_finished(instance, engine)
    outcomes += finish_stale_launches(
        instance, engine, settings, decided_by, job_lookup, launched_by
    )
    with engine.begin() as conn:
        found = scan(instance, conn, settings, scanner=scanner or decided_by, keep=job_filter)
    with engine.connect() as conn:
        decisions = decide_many(conn, found.candidates, settings)
    launched = 0
    handled = 0
    remembered: list[dict[str, object]] = []
    holds: list[dict[str, object]] = []
    held: dict[str, tuple[Candidate, str, str]] = {}  # run id -> (candidate, detail, why)
    skipped: list[tuple[Candidate, str]] = []  # (candidate, why)
    for candidate, decision in zip(found.candidates, decisions, strict=True):
        over_time = time.monotonic() - started > 2 * TIME_BUDGET_S
        if (max_launches is not None and launched >= max_launches) or over_time:
            why = "launch limit reached" if not over_time else "time budget of this pass used"
            outcomes.append(Outcome(candidate.run_id, candidate.reason, "deferred", why))
            # Due again on the next pass: the cursor has moved past it.
            remembered.append(
                _row(
                    candidate,
                    Decision("wait", why, decision.attempt, datetime.now(UTC), "backoff"),
                    decided_by,
                )
            )
            continue
        try:
            if decision.action == "launch" and handled:
                # Decided at the start of the pass; the runs handled before this one took
                # time, and a person may have cancelled its group (or switched recovery off)
                # meanwhile: decide again just before the claim.
                with engine.connect() as conn:
                    decision = decide_many(conn, [candidate], settings)[0]
            handled += 1
            outcome, detail = _handle(
                instance, engine, settings, candidate, decision, decided_by, job_lookup, launched_by
            )
            launched += outcome.action == "launched"
            remembered.append(_row(candidate, decision, decided_by))
            if outcome.action == "held":
                holds.append(_hold_row(candidate, decision, detail, decided_by))
                held[candidate.run_id] = (candidate, detail, decision.why)
            elif outcome.action == "skipped":
                skipped.append((candidate, decision.why))
        except Exception as error:  # one bad run must not stop the others' recovery
            log.exception("recovery of run %s failed", candidate.run_id)
            outcome = Outcome(
                candidate.run_id, candidate.reason, "error", f"{type(error).__name__}: {error}"
            )
            retry = datetime.now(UTC).timestamp() + settings.interval_s
            remembered.append(
                _row(
                    candidate,
                    Decision(
                        "wait",
                        f"error: {outcome.message}",
                        decision.attempt,
                        datetime.fromtimestamp(retry, UTC),
                        "backoff",
                    ),
                    decided_by,
                )
            )
        outcomes.append(outcome)
    with engine.begin() as conn:
        claimed = claim_many(conn, holds, status="held")
        save_decisions(conn, remembered)
        if found.cursor is not None:
            save_failure_cursor(conn, scanner or decided_by, found.cursor)
    # After the pass's decisions are stored: running backfills wait for what orbit retries.
    settle_backfill_runs(instance, engine, settings, keep=job_filter, log=log)
    # Another launcher (a person's `orbit resume`, a second daemon) got there first.
    outcomes = [
        replace(o, action="lost_race") if o.action == "held" and o.run_id not in claimed else o
        for o in outcomes
    ]
    _announce(instance, log, decided_by, [h for r, h in held.items() if r in claimed], skipped)
    for outcome in outcomes:
        log.info(outcome.line())
    return outcomes


def _announce(
    instance: DagsterInstance,
    log: Any,
    decided_by: str,
    holds: list[tuple[Candidate, str, str]],
    skips: list[tuple[Candidate, str]],
) -> None:
    """Write the pass's holds (first: a person must act) and skips into the runs' event logs.

    Each costs Dagster's storage a connection or two (a hold: an event and a tag, ~20 ms at
    load 8; a skip: an event), so a mass failure could push the tick past Dagster's sensor
    timeout: they get at most TIME_BUDGET_S a pass, after the decisions are stored. What is
    left is logged; `orbit check-interrupted` lists every held run either way.
    """
    until = time.monotonic() + TIME_BUDGET_S
    left = 0
    for candidate, detail, why in holds:
        if time.monotonic() > until:
            left += 1
            continue
        announce_hold(instance, candidate, detail=detail, why=why, decided_by=decided_by)
    for candidate, why in skips:
        if time.monotonic() > until:
            left += 1
            continue
        announce_not_recovering(instance, candidate, why=why, decided_by=decided_by)
    if left:
        log.warning(
            "%d decision(s) of this pass got no orbit event in the Dagster UI (time budget "
            "used); `orbit check-interrupted` lists the held runs",
            left,
        )


def _hold_row(
    candidate: Candidate, decision: Decision, detail: str, decided_by: str
) -> dict[str, object]:
    """The ``orbit.recoveries`` row of a hold."""
    return {
        "parent_run_id": candidate.run_id,
        "root_run_id": candidate.root_run_id,
        "job_name": candidate.job_name,
        "attempt": decision.attempt,
        "reason": candidate.reason,
        "detail": f"{detail} | held: {decision.why}",
        "decided_by": decided_by,
        "not_before": None,
    }


def _row(candidate: Candidate, decision: Decision, decided_by: str) -> dict[str, object]:
    """The remembered form of a decision (``orbit.recovery_decisions``)."""
    return {
        "parent_run_id": candidate.run_id,
        "root_run_id": candidate.root_run_id,
        "job_name": candidate.job_name,
        # A dead or hung run is FAILURE from now on; its cause is what was detected.
        "reason": candidate.reason,
        "detail": candidate.detail,
        "error_code": candidate.error_code,
        "failed_at": candidate.failed_at or datetime.now(UTC),
        "tags": candidate.tags,
        "action": decision.action,
        "why": decision.why,
        "depends": decision.depends,
        "not_before": decision.not_before if decision.depends == "backoff" else None,
        "decided_by": decided_by,
    }


def _handle(
    instance: DagsterInstance,
    engine: Engine,
    settings: RecoverySettings,
    candidate: Candidate,
    decision: Decision,
    decided_by: str,
    job_lookup: Callable[[str], JobDefinition | None] | None,
    launched_by: Mapping[str, str] | None = None,
) -> tuple[Outcome, str]:
    """Settle the run and act on the decision; returns the outcome and the detail (with
    what settling did). A hold is only reported here: the caller claims it."""
    if decision.action == "skip":
        if candidate.reason == "dead":
            # Even with recovery off, a dead run must not pretend to be running.
            mark_failed(instance, candidate.run_id, candidate.reason, candidate.detail, settings)
        return Outcome(
            candidate.run_id, candidate.reason, "skipped", decision.why
        ), candidate.detail
    detail = candidate.detail
    if candidate.reason == "hung":
        detail = f"{detail}; {terminate_hung(instance, candidate, settings)}"
    if candidate.reason in ("dead", "hung"):
        mark_failed(instance, candidate.run_id, candidate.reason, detail, settings)
    if decision.action == "wait":
        return Outcome(candidate.run_id, candidate.reason, "waiting", decision.why), detail
    if decision.action == "hold":
        # Claimed with the pass's other holds in one statement (``run_cycle``).
        return Outcome(candidate.run_id, candidate.reason, "held", decision.why), detail
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
        launched_by=launched_by,
    )
    outcome = Outcome(
        candidate.run_id,
        candidate.reason,
        "launched" if result.launched else "lost_race",
        f"{decision.why}: {result.message}",
        result.recovery_run_id,
    )
    return outcome, detail
