"""The one harness (``orbit_pipelines_tests.deployment``) on the Celery code location, with
the fast run queue, plus Celery workers that each look like a host of their own.

Each worker runs in its own UTS namespace with its own host name (``unshare --uts``), so
the heartbeats its steps write name that host, and the recovery sensor (on this host) must
judge them by heartbeat timeout: their pids mean nothing here. Each worker is its own
process group (``ChildProcesses``), so "the host dies" is one SIGKILL to that group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from orbit_pipelines_tests.deployment import BIN, REPO_ROOT, Deployment
from orbit_pipelines_tests.processes import wait_for

MODULE = "orbit_pipelines_tests.celery.location"
LOCATION = "orbit_celery"
WORKER_APP = "orbit_pipelines_tests.celery.worker_app"
BROKER_ADDRESS = ("127.0.0.1", 5672)

# A dead worker is found by heartbeat timeout only. Steps beat every 2 s; 15 s leaves room
# for a loaded 2-core machine without taking a slow step for a dead one.
CELERY_RECOVERY_ENV = {
    "ORBIT_RECOVERY_INTERVAL_S": "2",
    "ORBIT_RECOVERY_HEARTBEAT_TIMEOUT_S": "15",
    "ORBIT_RECOVERY_BACKOFF_BASE_S": "2",
}


def broker_answers() -> bool:
    """True when something accepts TCP connections on RabbitMQ's port."""
    try:
        with socket.create_connection(BROKER_ADDRESS, timeout=2):
            return True
    except OSError:
        return False


@dataclass
class CeleryHarness(Deployment):
    """A daemon on the Celery code location, and named Celery workers."""

    module: ClassVar[str] = MODULE
    location: ClassVar[str] = LOCATION
    fast_queue: ClassVar[bool] = True

    settings_env: dict[str, str] = field(default_factory=lambda: dict(CELERY_RECOVERY_ENV))
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_worker(self, name: str, *, acks_late: bool = False) -> subprocess.Popen[bytes]:
        """A Celery worker with host name ``name``: one pool process, the ``dagster`` queue."""
        env = self.env()
        if acks_late:
            env["ORBIT_TEST_CELERY_ACKS_LATE"] = "1"
        log = self.tmp / f"{name}.log"
        # unshare execs sh, sh execs celery: the worker keeps the pid (and so the process
        # group) that ChildProcesses started, and only its own host name changes.
        script = 'hostname "$1" && exec "$2" -A "$3" worker -n "$1@%h" -Q dagster -c 1 -l INFO'
        proc = self.children.start(
            [
                "unshare",
                "--uts",
                "sh",
                "-c",
                script,
                "sh",
                name,
                str(BIN / "celery"),
                WORKER_APP,
            ],
            env=env,
            cwd=REPO_ROOT,
            log_path=log,
        )
        self.workers[name] = proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"worker {name} exited {proc.returncode}: {log.read_text()}")
            return log.exists() and f"{name}@{name} ready." in log.read_text()

        wait_for(ready, timeout_s=120, what=f"celery worker {name}")
        return proc

    def worker_of_pid(self, pid: int) -> str:
        """The worker whose process group ``pid`` belongs to."""
        group = os.getpgid(pid)
        for name, proc in self.workers.items():
            if proc.pid == group:
                return name
        raise AssertionError(f"pid {pid} (group {group}) is in no worker's process group")

    def kill_worker(self, name: str) -> None:
        """The host dies: SIGKILL to the worker's whole process group."""
        os.killpg(self.workers[name].pid, signal.SIGKILL)
        self.workers[name].wait(timeout=30)

    def beats(self, run_id: str) -> dict[str, tuple[str, int, int]]:
        """step key -> (host, pid, rows done) of every heartbeat row of ``run_id``."""
        return {b.step_key: (b.host, b.pid, b.rows_done) for b in self.heartbeats([run_id])}

    def run_process_pid(self, run_id: str) -> int:
        """The pid of ``run_id``'s run worker, from Dagster's "Started process" event."""
        prefix = "Started process for run (pid: "
        for entry in self.instance.all_logs(run_id):
            if (entry.message or "").startswith(prefix):
                return int(entry.message[len(prefix) :].split(")", 1)[0])
        raise AssertionError(f"run {run_id} has no 'Started process' event")


def process_ended(pid: int) -> bool:
    """Gone, or a zombie not reaped yet: either way it holds nothing any more."""
    try:
        return process_state(pid) in ("Z", "X")
    except FileNotFoundError:
        return True


def process_state(pid: int) -> str:
    """The one-letter state of ``pid`` in /proc (T: stopped, Z: zombie)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[-1].split()[0]
