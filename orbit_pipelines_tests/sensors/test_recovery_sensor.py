"""The sensor evaluated on a real instance (no daemon): it settles a dead run and records
what it could not do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    SkipReason,
    build_sensor_context,
)
from sqlalchemy import Engine

from orbit_pipelines.dagster_io.resources import OrbitStore
from orbit_pipelines.recovery.liveness import this_host
from orbit_pipelines.sensors.recovery_sensor import make_recovery_sensor
from orbit_pipelines.store.heartbeats import write_heartbeat
from orbit_pipelines.store.recoveries import get_recovery
from orbit_pipelines_tests.sensors.e2e_location import defs, rows_job


def test_sensor_defaults() -> None:
    sensor = make_recovery_sensor()
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    # 5 s: the sensor daemon cannot tick faster (bench/recovery_latency.py, 9892975).
    assert sensor.minimum_interval_seconds == 5


def test_sensor_marks_a_dead_run_failed_and_records_the_failed_launch(
    dagster_home: Path, db_url: str, engine: Engine
) -> None:
    instance = DagsterInstance.get()
    run = instance.create_run_for_job(job_def=rows_job, status=DagsterRunStatus.STARTED)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with engine.begin() as conn:
        write_heartbeat(
            conn,
            run_id=run.run_id,
            step_key="process_rows",
            root_run_id=run.run_id,
            host=this_host(),
            pid=child.pid,
            rows_done=1,
            rows_total=5,
        )
    sensor = make_recovery_sensor()
    with build_sensor_context(
        instance=instance,
        repository_def=defs.get_repository_def(),
        resources={"orbit_store": OrbitStore(postgres_url=db_url)},
    ) as context:
        result = sensor.evaluate_tick(context)
    assert result.run_requests == []
    assert result.skip_message and run.run_id in result.skip_message
    after = instance.get_run_by_id(run.run_id)
    assert after is not None and after.status == DagsterRunStatus.FAILURE
    # Created in storage only, the run has no code origin to re-launch from: the sensor
    # records that for a person instead of retrying blindly every tick.
    with engine.connect() as conn:
        row = get_recovery(conn, run.run_id)
    assert row is not None and row.status == "held" and row.reason == "dead"
    assert row.outcome is not None and "E-4010" in row.outcome
    assert isinstance(SkipReason("x"), SkipReason)
