"""Make a dead or hung run's state true in Dagster before it is re-executed.

A hung run is terminated (through Dagster, then by pid when that does not work); a dead or
terminated run is marked FAILURE with the reason in its event log, so the UI says why and
``ReexecutionOptions``-style "from failure" re-execution accepts it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from orbit_pipelines.recovery.detect import MARK_PREFIX, Candidate
from orbit_pipelines.recovery.liveness import pid_alive, this_host
from orbit_pipelines.recovery.settings import RecoverySettings

if TYPE_CHECKING:
    from dagster._core.instance.ref import InstanceRef  # only the type; no private call

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


def mark_failed(
    instance: DagsterInstance,
    run_id: str,
    reason: str,
    detail: str,
    settings: RecoverySettings | None = None,
) -> bool:
    """Mark a run that is not FAILURE yet as FAILURE, with the reason in its event log.

    Returns False when the run already was FAILURE (e.g. the code server got there first).
    A run worker left waiting for the run is stopped ``terminate_wait_s`` later (see
    ``stop_orphaned_run_worker``).
    """
    run = instance.get_run_by_id(run_id)
    if run is None or run.status == DagsterRunStatus.FAILURE:
        return False
    instance.report_run_failed(run, f"{MARK_PREFIX}{reason}: {detail}")
    grace_s = (settings or RecoverySettings()).terminate_wait_s
    stop_orphaned_run_worker(instance, run_id, grace_s=grace_s)
    return True


_STARTED = "Started process for run (pid: "
# /proc/<pid>/stat times are in clock ticks since boot.
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stop_orphaned_run_worker(
    instance: DagsterInstance, run_id: str, *, grace_s: float
) -> threading.Thread | None:
    """SIGKILL, ``grace_s`` from now, the run worker of a run orbit has just marked FAILURE
    if it is still alive then, is a child of this process (the code server the sensor runs
    in started it: Dagster's default run launcher) and has no step process of its own left.
    Returns the thread that waits, None when there is no such worker now.

    Under a distributed executor the run worker only waits for its steps' results: Dagster's
    Celery executor polls each task's result with no timeout while any is outstanding, and
    a task lost with its worker host never has one (a revoke reaches only live workers, so
    not even a termination through the run launcher ends the wait). Left alone, the process
    waits forever, holding its broker and database connections. The run is FAILURE and its
    recovery runs elsewhere, so nothing of it is needed any more; SIGTERM would let it write
    a late end event that could turn the FAILURE into CANCELED. The grace lets a run worker
    that is about to end by itself (a multiprocess executor that saw its step crash) write
    its own account first; a worker with step processes still running is left alone (they
    would be orphaned), and so is a pid that is not our child (another host, the CLI)."""
    starts = [
        entry
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
        if (entry.message or "").startswith(_STARTED)
    ]
    if not starts:
        return None
    started = starts[-1]
    try:
        pid = int(started.message[len(_STARTED) :].split(")", 1)[0])
    except ValueError:
        return None
    if not _our_child_started_by(pid, started.timestamp):
        return None
    ref = instance.get_ref()
    waiter = threading.Thread(
        target=_stop_after,
        args=(ref, run_id, pid, started.timestamp, grace_s),
        name=f"orbit-stop-run-worker-{pid}",
        daemon=True,
    )
    waiter.start()
    return waiter


def _stop_after(ref: InstanceRef, run_id: str, pid: int, started_at: float, grace_s: float) -> None:
    time.sleep(grace_s)
    if not _our_child_started_by(pid, started_at) or _children(pid):
        return
    # The sensor's instance is closed once its evaluation returns: this thread has its own.
    with DagsterInstance.from_ref(ref) as instance:
        run = instance.get_run_by_id(run_id)
        if run is None or run.status != DagsterRunStatus.FAILURE:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        instance.report_engine_event(
            f"orbit recovery: SIGKILLed the run's worker process (pid {pid}, started by this "
            f"code server): {grace_s:g}s after the run was marked failed it was still waiting "
            "for step results that cannot come",
            run,
        )


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    """Live (not zombie) child processes of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def _our_child_started_by(pid: int, at: float) -> bool:
    """Whether ``pid`` is a live child of this process that started no later than ``at``
    (a recycled pid starts later)."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X") or int(fields[1]) != os.getpid():
        return False
    try:
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return False
    # btime has a resolution of one second.
    return boot + int(fields[19]) / _CLOCK_TICKS <= at + 2.0
