"""Make a dead or hung run's state true in Dagster before it is re-executed.

A hung run is terminated (through Dagster, then by pid when that does not work); a dead or
terminated run is marked FAILURE with the reason in its event log, so the UI says why and
``ReexecutionOptions``-style "from failure" re-execution accepts it.
"""

from __future__ import annotations

import os
import signal
import time

from dagster import DagsterInstance, DagsterRunStatus

from orbit_pipelines.recovery.detect import MARK_PREFIX, Candidate
from orbit_pipelines.recovery.liveness import pid_alive, this_host
from orbit_pipelines.recovery.settings import RecoverySettings

_ENDED = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED, DagsterRunStatus.SUCCESS)


def terminate_hung(
    instance: DagsterInstance, candidate: Candidate, settings: RecoverySettings
) -> str:
    """Stop a hung run; returns what was done, for the log and the recovery row."""
    notes: list[str] = []
    try:
        asked = instance.run_launcher.terminate(candidate.run_id)
        notes.append("Dagster terminate requested" if asked else "Dagster could not terminate")
    except Exception as error:  # a dead code server raises gRPC errors of many kinds
        notes.append(f"Dagster terminate failed: {type(error).__name__}")
    host = this_host()
    local = [pid for h, pid in candidate.pids if h == host]
    deadline = time.monotonic() + settings.terminate_wait_s
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(candidate.run_id)
        if (run is None or run.status in _ENDED) and not any(pid_alive(p) for p in local):
            return "; ".join([*notes, "run stopped"])
        time.sleep(0.25)
    for pid in local:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                notes.append(f"SIGKILLed pid {pid}")
            except ProcessLookupError:
                pass
    remote = [f"{h}:{pid}" for h, pid in candidate.pids if h != host]
    if remote:
        notes.append(f"cannot signal workers on other hosts: {', '.join(remote)}")
    return "; ".join(notes)


def mark_failed(instance: DagsterInstance, run_id: str, reason: str, detail: str) -> bool:
    """Mark a run that is not FAILURE yet as FAILURE, with the reason in its event log.

    Returns False when the run already was FAILURE (e.g. the code server got there first).
    """
    run = instance.get_run_by_id(run_id)
    if run is None or run.status == DagsterRunStatus.FAILURE:
        return False
    instance.report_run_failed(run, f"{MARK_PREFIX}{reason}: {detail}")
    return True
