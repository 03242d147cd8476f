"""`orbit doctor`: is this deployment able to recover runs, and do Dagster's run state and
orbit's ledgers agree? Every problem comes with the fix.

Checks, each a function returning the problems it found:

- configuration: the queued run coordinator (recovery submits to the run queue), Dagster's
  own ``run_retries`` off (one owner of re-execution), the recovery sensor not stopped, a
  fresh sensor-daemon heartbeat;
- schema: migrations current, and every table the code uses present (a half-created
  schema: a migration that was interrupted or a table dropped by hand);
- connection headroom on the Postgres server;
- consistency: rows still pending/running in groups whose latest run succeeded, effect
  intents with no outcome in groups that are not running, 'launching' recoveries older than
  the take-over time, heartbeats newer than the end of their (finished) run.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from dagster import DagsterInstance, DagsterRunStatus, QueuedRunCoordinator, RunsFilter
from sqlalchemy import Connection, Engine, func, select, text

from orbit_pipelines.recovery.explain import first_line
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.effect_ledger import STATUS, WITH_SCOPE
from orbit_pipelines.store.migrations import status as schema_status
from orbit_pipelines.store.tables import (
    effect_scopes,
    effects,
    heartbeats,
    metadata,
    recoveries,
    step_rows,
)
from orbit_pipelines.store.urls import mask_secrets

SENSOR_NAME = "orbit_recovery"
DAEMON_FRESH_S = 60.0
HEADROOM_MIN_FREE = 10
_FINISHED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
_RUNNING = (
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
)
# A heartbeat this long after its run's end is a worker that outlived its run.
_BEAT_SLACK_S = 5.0


@dataclass(frozen=True)
class Problem:
    """One thing wrong, what it is about, and how to fix it."""

    check: str
    problem: str
    fix: str


@dataclass(frozen=True)
class Report:
    """Every check that ran and the problems found; facts are the figures behind them."""

    checks: list[str]
    problems: list[Problem]
    facts: dict[str, object]

    def as_json(self) -> dict[str, object]:
        """Plain JSON types."""
        return {
            "ok": not self.problems,
            "checks": self.checks,
            "problems": [asdict(p) for p in self.problems],
            "facts": self.facts,
        }


def check_configuration(instance: DagsterInstance, facts: dict[str, object]) -> list[Problem]:
    """Run coordinator, run retries, the sensor's state, the daemon's heartbeat."""
    found: list[Problem] = []
    if not isinstance(instance.run_coordinator, QueuedRunCoordinator):
        found.append(
            Problem(
                "run_coordinator",
                f"the instance uses {type(instance.run_coordinator).__name__}; recovery "
                "submits re-executions to the run queue",
                "remove run_coordinator from dagster.yaml (the queued coordinator is the default)",
            )
        )
    if instance.run_retries_enabled:
        found.append(
            Problem(
                "run_retries",
                "Dagster's run_retries is enabled: Dagster and orbit would both re-execute "
                "a failed run",
                "set run_retries: {enabled: false} in dagster.yaml",
            )
        )
    from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

    states = [
        s
        for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if s.name == SENSOR_NAME
    ]
    facts["sensor_states"] = sorted({s.status.value for s in states})
    if states and all(s.status == InstigatorStatus.STOPPED for s in states):
        found.append(
            Problem(
                "sensor",
                f"the {SENSOR_NAME} sensor is stopped: nothing recovers runs automatically",
                f"start it in the UI (Automation > {SENSOR_NAME}) or "
                f"`dagster sensor start {SENSOR_NAME}`",
            )
        )
    beats = instance.get_daemon_heartbeats()
    sensor_beat = beats.get("SENSOR")
    age = time.time() - sensor_beat.timestamp if sensor_beat is not None else None
    facts["sensor_daemon_heartbeat_age_s"] = round(age, 1) if age is not None else None
    if age is None or age > DAEMON_FRESH_S:
        what = "never beat" if age is None else f"last beat {age:.0f}s ago"
        found.append(
            Problem(
                "daemon",
                f"the dagster-daemon's sensor daemon {what}: sensors do not tick",
                "run `dagster-daemon run` (or `orbit dev`) with the same DAGSTER_HOME",
            )
        )
    return found


def check_schema(engine: Engine, conn: Connection, facts: dict[str, object]) -> list[Problem]:
    """Migrations current and every table present."""
    found: list[Problem] = []
    state = schema_status(engine)
    facts["schema_version"] = state.current
    facts["schema_latest"] = state.latest
    if not state.is_current:
        found.append(Problem("schema_version", state.describe(), "run `orbit db upgrade`"))
    present = set(
        conn.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'orbit'")
        ).scalars()
    )
    expected = {t.name for t in metadata.sorted_tables}
    missing = sorted(expected - present)
    if missing and state.current > 0:
        found.append(
            Problem(
                "schema_tables",
                f"half-created schema: table(s) {', '.join(missing)} missing at version "
                f"{state.current}",
                "restore from a backup, or in a database with no state worth keeping: "
                "DROP SCHEMA orbit CASCADE; then `orbit db upgrade`",
            )
        )
    return found


def check_connections(conn: Connection, facts: dict[str, object]) -> list[Problem]:
    """Free connection slots on the server."""
    limit = int(conn.execute(text("SELECT current_setting('max_connections')::int")).scalar_one())
    reserved = int(
        conn.execute(
            text("SELECT current_setting('superuser_reserved_connections')::int")
        ).scalar_one()
    )
    used = int(conn.execute(text("SELECT count(*) FROM pg_stat_activity")).scalar_one())
    free = limit - reserved - used
    facts["connections"] = {"max": limit, "reserved": reserved, "used": used, "free": free}
    if free < HEADROOM_MIN_FREE:
        return [
            Problem(
                "connection_headroom",
                f"{free} free connection slot(s) of {limit} ({used} used, {reserved} reserved); "
                "a row step holds up to 3, a run worker and the daemon more",
                "raise max_connections, put PgBouncer in front, or run fewer steps at once",
            )
        ]
    return []


def _latest_status(instance: DagsterInstance, roots: set[str]) -> dict[str, DagsterRunStatus]:
    """The status of the newest run of each group (two reads for all groups)."""
    if not roots:
        return {}
    records = list(instance.get_run_records(filters=RunsFilter(run_ids=sorted(roots))))
    records += instance.get_run_records(
        filters=RunsFilter(tags={"dagster/root_run_id": sorted(roots)})
    )
    newest: dict[str, tuple[datetime, DagsterRunStatus]] = {}
    for record in records:
        run = record.dagster_run
        root = run.root_run_id or run.run_id
        if root in newest and newest[root][0] >= record.create_timestamp:
            continue
        newest[root] = (record.create_timestamp, run.status)
    return {root: status for root, (_at, status) in newest.items()}


def check_consistency(
    instance: DagsterInstance,
    conn: Connection,
    settings: RecoverySettings,
    facts: dict[str, object],
) -> list[Problem]:
    """Orbit's ledgers against Dagster's run state."""
    found: list[Problem] = []
    # A Result has .keys(): dict(result) would treat it as a mapping, hence the comprehension.
    open_rows = {
        root: int(n)
        for root, n in conn.execute(
            select(step_rows.c.root_run_id, func.count())
            .where(step_rows.c.status.in_(("pending", "running")))
            .group_by(step_rows.c.root_run_id)
        )
    }
    intents = {
        root: int(n)
        for root, n in conn.execute(
            select(effect_scopes.c.root_run_id, func.count())
            .select_from(WITH_SCOPE)
            .where(effects.c.status == STATUS["intent"])
            .group_by(effect_scopes.c.root_run_id)
        )
    }
    latest = _latest_status(instance, set(open_rows) | set(intents))
    for root, n in sorted(open_rows.items()):
        if latest.get(root) == DagsterRunStatus.SUCCESS:
            found.append(
                Problem(
                    "rows_open_in_finished_group",
                    f"run group {root} succeeded but {n} row(s) are still pending or running "
                    "in the row ledger",
                    f"check the group's steps (`orbit status {root}`); if the rows were "
                    "processed, mark them done; otherwise re-run the group",
                )
            )
    for root, n in sorted(intents.items()):
        if latest.get(root) not in _RUNNING:
            found.append(
                Problem(
                    "intent_without_outcome",
                    f"run group {root} is not running but {n} side effect(s) have an intent "
                    "and no outcome (in doubt)",
                    f"`orbit effects {root}`, check each at its receiver, then "
                    "`orbit effects resolve KEY --succeeded|--failed`",
                )
            )
    stale_before = datetime.now(UTC) - timedelta(seconds=settings.launch_takeover_s)
    stale = conn.execute(
        select(recoveries.c.parent_run_id, recoveries.c.detected_at).where(
            recoveries.c.status == "launching", recoveries.c.detected_at < stale_before
        )
    ).all()
    for parent, detected_at in stale:
        found.append(
            Problem(
                "stale_launching_recovery",
                f"the recovery of run {parent} has been 'launching' since "
                f"{detected_at:%Y-%m-%d %H:%M:%S %Z} (the launcher died mid-launch)",
                f"the sensor takes it over after {settings.launch_takeover_s:.0f}s when it "
                f"runs; or `orbit resume {parent}` now",
            )
        )
    beats = conn.execute(
        select(heartbeats.c.run_id, heartbeats.c.step_key, heartbeats.c.beat_at)
    ).all()
    beat_runs = sorted({b[0] for b in beats})
    ended: dict[str, float] = {}
    if beat_runs:
        for record in instance.get_run_records(filters=RunsFilter(run_ids=beat_runs)):
            if record.dagster_run.status in _FINISHED and record.end_time:
                ended[record.dagster_run.run_id] = record.end_time
    for run_id, step_key, beat_at in beats:
        end = ended.get(run_id)
        if end is not None and beat_at.timestamp() > end + _BEAT_SLACK_S:
            found.append(
                Problem(
                    "heartbeat_of_finished_run",
                    f"step {step_key} of run {run_id} beat at {beat_at:%H:%M:%S %Z}, "
                    f"{beat_at.timestamp() - end:.0f}s after the run ended: a worker outlived "
                    "its run",
                    "find the process by the heartbeat's host and pid and stop it; fencing "
                    "keeps it from committing",
                )
            )
    facts["groups_with_open_rows"] = len(open_rows)
    facts["groups_with_intents"] = len(intents)
    return found


def run_doctor(instance: DagsterInstance, engine: Engine, settings: RecoverySettings) -> Report:
    """Every check; a check that cannot run (its tables missing) is a problem of its own."""
    facts: dict[str, object] = {}
    problems = check_configuration(instance, facts)
    checks = ["configuration", "schema", "connections", "consistency"]
    with engine.connect() as conn:
        problems += check_schema(engine, conn, facts)
        problems += check_connections(conn, facts)
    try:
        with engine.connect() as conn:
            problems += check_consistency(instance, conn, settings, facts)
    except Exception as error:  # a missing table: already reported by check_schema
        if os.environ.get("ORBIT_DEBUG"):
            raise
        problems.append(
            Problem(
                "consistency",
                f"could not compare the ledgers: {type(error).__name__}: "
                f"{first_line(mask_secrets(str(error)))}",
                "fix the schema problems above first",
            )
        )
    return Report(checks, problems, facts)
