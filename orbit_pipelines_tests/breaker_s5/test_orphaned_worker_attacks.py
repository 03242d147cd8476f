"""Breaker attacks on 329f45a (a dead or hung run's run worker left waiting is SIGKILLed):
the kill is decided terminate_wait_s after mark_failed; anything that changed in between
must keep a live worker alive. Real processes, real Dagster instance."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from dagster import DagsterEvent, DagsterEventType, DagsterInstance, DagsterRunStatus

from orbit_pipelines.processes import ChildProcesses, wait_for
from orbit_pipelines.recovery.dagster_private import EngineEventData
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.recovery.settle import mark_failed, stop_orphaned_run_worker
from orbit_pipelines_tests.recovery.many_runs import quiet_job, started_runs

GRACE = RecoverySettings(terminate_wait_s=1.0)


def _started_process(instance: DagsterInstance, run_id: str, message: str, at: float) -> None:
    instance.report_dagster_event(
        DagsterEvent(
            event_type_value=DagsterEventType.ENGINE_EVENT.value,
            job_name=quiet_job.name,
            message=message,
            event_specific_data=EngineEventData.in_process(0),
        ),
        run_id=run_id,
        timestamp=at,
    )


def _killed(instance: DagsterInstance, run_id: str) -> bool:
    return any("SIGKILLed" in (e.message or "") for e in instance.all_logs(run_id))


def test_a_worker_that_starts_a_step_process_during_the_grace_is_left_alone(
    dagster_home: Path, children: ChildProcesses
) -> None:
    # Idle when the run is marked failed, busy (a step process of its own) by the kill.
    instance = DagsterInstance.get()
    [run] = started_runs(instance, 1)
    worker = children.start(["sh", "-c", "sleep 0.3; sleep 300 & wait"])
    _started_process(
        instance, run.run_id, f"Started process for run (pid: {worker.pid}).", time.time()
    )
    assert mark_failed(instance, run.run_id, "dead", "no heartbeat", GRACE)
    with pytest.raises(subprocess.TimeoutExpired):
        worker.wait(timeout=3 * GRACE.terminate_wait_s)
    assert not _killed(instance, run.run_id)


def test_a_run_no_longer_failed_when_the_grace_ends_keeps_its_worker(
    dagster_home: Path, children: ChildProcesses
) -> None:
    # The worker wrote its own end (CANCELED) during the grace: the FAILURE orbit wrote is
    # not current any more, so the decision taken on it must not be carried out.
    instance = DagsterInstance.get()
    [run] = started_runs(instance, 1)
    worker = children.start(["sleep", "300"])
    _started_process(
        instance, run.run_id, f"Started process for run (pid: {worker.pid}).", time.time()
    )
    assert mark_failed(instance, run.run_id, "hung", "no progress", GRACE)
    failed = instance.get_run_by_id(run.run_id)
    assert failed is not None
    instance.report_run_canceled(failed)
    with pytest.raises(subprocess.TimeoutExpired):
        worker.wait(timeout=3 * GRACE.terminate_wait_s)
    ended = instance.get_run_by_id(run.run_id)
    assert ended is not None and ended.status == DagsterRunStatus.CANCELED
    assert not _killed(instance, run.run_id)


@pytest.mark.parametrize(
    "message",
    [
        "Started process for run (pid: abc).",
        "Started process for run (pid: -1).",
        "Started process for run (pid: 0).",
        "Started process for run (pid: 99999999999999999999).",
        "Started process for run (pid: ",
    ],
)
def test_odd_started_events_never_kill_anything(
    dagster_home: Path, children: ChildProcesses, message: str
) -> None:
    # pid 0 / -1 passed to os.kill would signal our process group / every process we may.
    instance = DagsterInstance.get()
    [run] = started_runs(instance, 1)
    bystander = children.start(["sleep", "300"])
    _started_process(instance, run.run_id, message, time.time())
    assert instance.get_run_by_id(run.run_id) is not None
    waiter = stop_orphaned_run_worker(instance, run.run_id, grace_s=0.2)
    if waiter is not None:
        waiter.join(timeout=10)
    assert bystander.poll() is None
    assert not _killed(instance, run.run_id)


def test_the_second_start_event_names_the_worker(
    dagster_home: Path, children: ChildProcesses
) -> None:
    # Two start events (a relaunch of the same run id): only the last one's process is the
    # run's worker now; the first's pid, a live process of ours, is left alone.
    instance = DagsterInstance.get()
    [run] = started_runs(instance, 1)
    older = children.start(["sleep", "300"])
    newer = children.start(["sleep", "300"])
    now = time.time()
    _started_process(instance, run.run_id, f"Started process for run (pid: {older.pid}).", now)
    _started_process(instance, run.run_id, f"Started process for run (pid: {newer.pid}).", now)
    assert mark_failed(instance, run.run_id, "dead", "no heartbeat", GRACE)
    assert newer.wait(timeout=30) == -9
    assert older.poll() is None
    # The kill's account is written just after it (the database must outlive that write).
    wait_for(lambda: _killed(instance, run.run_id), timeout_s=30, what="the kill's event")
