"""A run worker left waiting after orbit marked its run dead is stopped, and only then.

The Celery e2e test (``celery/test_celery_e2e.py``) shows the real case: a worker host dies
and the run's run worker waits for that task's result for ever. Here the conditions that
keep a process alive are checked on real processes and a real Dagster instance: the
"run worker" is a child of this test process (as a run worker is of the code server the
sensor runs in), named by the run's own "Started process for run" event."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from dagster import DagsterEvent, DagsterEventType, DagsterInstance, DagsterRunStatus

from orbit_pipelines.processes import ChildProcesses, wait_for
from orbit_pipelines.recovery.dagster_private import EngineEventData
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.recovery.settle import mark_failed
from orbit_pipelines_tests.recovery.many_runs import quiet_job, started_runs

GRACE = RecoverySettings(terminate_wait_s=0.5)


def _started_process(instance: DagsterInstance, run_id: str, pid: int, at: float) -> None:
    """The event Dagster's code server writes when it starts a run's process."""
    instance.report_dagster_event(
        DagsterEvent(
            event_type_value=DagsterEventType.ENGINE_EVENT.value,
            job_name=quiet_job.name,
            message=f"Started process for run (pid: {pid}).",
            event_specific_data=EngineEventData.in_process(pid),
        ),
        run_id=run_id,
        timestamp=at,
    )


def _messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [entry.message or "" for entry in instance.all_logs(run_id)]


def test_a_waiting_run_worker_is_killed_after_the_grace(
    dagster_home: Path, children: ChildProcesses
) -> None:
    instance = DagsterInstance.get()
    [run] = started_runs(instance, 1)
    worker = children.start(["sleep", "300"])
    _started_process(instance, run.run_id, worker.pid, time.time())
    assert mark_failed(instance, run.run_id, "dead", "no heartbeat", GRACE)
    assert worker.wait(timeout=30) == -9
    killed = f"SIGKILLed the run's worker process (pid {worker.pid}"
    # The event is written just after the kill.
    wait_for(
        lambda: any(killed in m for m in _messages(instance, run.run_id)),
        timeout_s=30,
        what="the kill in the run's event log",
    )
    ended = instance.get_run_by_id(run.run_id)
    assert ended is not None and ended.status == DagsterRunStatus.FAILURE


def test_a_run_worker_with_step_processes_or_a_recycled_pid_is_left_alone(
    dagster_home: Path, children: ChildProcesses
) -> None:
    """A worker with a step process of its own (multiprocess executor) would orphan it;
    a process that started after the run's process did is not that process."""
    instance = DagsterInstance.get()
    busy_run, recycled_run = started_runs(instance, 2)
    busy = children.start(["sh", "-c", "sleep 300 & wait"])
    _started_process(instance, busy_run.run_id, busy.pid, time.time())
    recycled = children.start(["sleep", "300"])
    _started_process(instance, recycled_run.run_id, recycled.pid, time.time() - 60)
    time.sleep(0.3)  # sh has started its sleep
    assert mark_failed(instance, busy_run.run_id, "dead", "no heartbeat", GRACE)
    assert mark_failed(instance, recycled_run.run_id, "dead", "no heartbeat", GRACE)
    with pytest.raises(subprocess.TimeoutExpired):
        busy.wait(timeout=3 * GRACE.terminate_wait_s)
    assert recycled.poll() is None
    for run_id in (busy_run.run_id, recycled_run.run_id):
        assert not any("SIGKILLed" in m for m in _messages(instance, run_id))
