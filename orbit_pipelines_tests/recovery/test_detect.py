"""Detection against a real Dagster instance on Postgres and real heartbeats."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, job, op
from sqlalchemy import Engine, text

from orbit_pipelines.recovery.detect import detect
from orbit_pipelines.recovery.liveness import this_host
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.heartbeats import write_heartbeat

SETTINGS = RecoverySettings(heartbeat_timeout_s=30, stall_timeout_s=15, start_grace_s=600)


@op
def quiet_op() -> None:
    """Never executed here: the runs are created in storage only."""


@job
def quiet_job() -> None:
    """A one-step job."""
    quiet_op()


def _started_run(instance: DagsterInstance) -> str:
    run = instance.create_run_for_job(job_def=quiet_job, status=DagsterRunStatus.STARTED)
    return run.run_id


def _beat(engine: Engine, run_id: str, *, pid: int, host: str | None = None) -> None:
    with engine.begin() as conn:
        write_heartbeat(
            conn,
            run_id=run_id,
            step_key="quiet_op",
            root_run_id=run_id,
            host=host or this_host(),
            pid=pid,
            rows_done=3,
            rows_total=10,
        )


def _age(engine: Engine, run_id: str, column: str, seconds: int) -> None:
    statements = {
        "beat_at": "UPDATE orbit.heartbeats SET beat_at = now() - make_interval(secs => :s),"
        " progress_at = now() - make_interval(secs => :s) WHERE run_id = :r",
        "progress_at": "UPDATE orbit.heartbeats SET progress_at = now() - make_interval(secs => :s)"
        " WHERE run_id = :r",
    }
    with engine.begin() as conn:
        conn.execute(text(statements[column]), {"s": seconds, "r": run_id})


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _found(
    instance: DagsterInstance, engine: Engine, settings: RecoverySettings = SETTINGS
) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        return {c.run_id: (c.reason, c.detail) for c in detect(instance, conn, settings)}


def test_dead_hung_and_healthy_runs(dagster_home: Path, engine: Engine) -> None:
    instance = DagsterInstance.get()
    dead_local = _started_run(instance)
    _beat(engine, dead_local, pid=_dead_pid())
    dead_remote = _started_run(instance)
    _beat(engine, dead_remote, pid=1, host="other-host")
    _age(engine, dead_remote, "beat_at", 60)
    quiet_remote = _started_run(instance)
    _beat(engine, quiet_remote, pid=1, host="other-host")
    _age(engine, quiet_remote, "beat_at", 10)  # within the heartbeat timeout
    hung = _started_run(instance)
    _beat(engine, hung, pid=os.getpid())
    _age(engine, hung, "progress_at", 20)
    healthy = _started_run(instance)
    _beat(engine, healthy, pid=os.getpid())

    found = _found(instance, engine)
    assert found[dead_local][0] == "dead" and "worker process gone" in found[dead_local][1]
    assert found[dead_remote][0] == "dead" and "no heartbeat for" in found[dead_remote][1]
    assert found[hung][0] == "hung" and "no row progress" in found[hung][1]
    assert quiet_remote not in found and healthy not in found


def test_run_without_heartbeat_is_dead_only_after_the_start_grace(
    dagster_home: Path, engine: Engine
) -> None:
    instance = DagsterInstance.get()
    run_id = _started_run(instance)
    run = instance.get_run_by_id(run_id)
    assert run is not None
    instance.report_engine_event("worker started", run)
    assert run_id not in _found(instance, engine)
    no_grace = RecoverySettings(start_grace_s=0)
    reason, detail = _found(instance, engine, no_grace)[run_id]
    assert reason == "dead" and "no heartbeat ever" in detail
