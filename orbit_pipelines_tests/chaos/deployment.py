"""The real deployment a chaos round runs against: our own Postgres, the carrier, a
``dagster-daemon`` on the shipped code location (orbit_examples.definitions) with the
recovery sensor on short intervals.

It extends the recovery e2e tests' ``Harness`` (same daemon, status and run-group helpers)
with what the example jobs need: the shipped workspace, the carrier's URL and token in the
environment of every Dagster process, and the process tree of a run (run worker, step
processes) so a round can kill a chosen part of it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

from dagster import DagsterRun, DagsterRunStatus, RunsFilter

from orbit_pipelines.dagster_io.dagster_home import shipped_config
from orbit_pipelines.store.heartbeats import Heartbeat, heartbeats_for_runs
from orbit_pipelines_tests.carrier.running import TOKEN, RunningCarrier
from orbit_pipelines_tests.sensors.harness import Harness

# Short recovery timings so a round takes seconds (see orbit_pipelines/recovery/settings.py).
CHAOS_SETTINGS = {
    "ORBIT_RECOVERY_INTERVAL_S": "2",
    "ORBIT_RECOVERY_HEARTBEAT_TIMEOUT_S": "6",
    "ORBIT_RECOVERY_STALL_TIMEOUT_S": "60",
    # A run killed before its first heartbeat (while loading) is judged by Dagster events.
    "ORBIT_RECOVERY_START_GRACE_S": "30",
    "ORBIT_RECOVERY_BACKOFF_BASE_S": "2",
    "ORBIT_RECOVERY_BACKOFF_MAX_S": "10",
    "ORBIT_RECOVERY_MAX_ATTEMPTS": "6",
    "ORBIT_RECOVERY_TERMINATE_WAIT_S": "3",
    "ORBIT_RECOVERY_LAUNCH_TAKEOVER_S": "20",
}

TERMINAL = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


@dataclass
class ChaosHarness(Harness):
    """A Harness on the shipped code location with a carrier."""

    carrier: RunningCarrier | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        # The real code location, exactly as `orbit dev` serves it.
        self.workspace = shipped_config("workspace.yaml")
        self.settings_env = dict(CHAOS_SETTINGS)

    def env(self) -> dict[str, str]:
        """The Harness environment plus the carrier's address and token."""
        env = super().env()
        if self.carrier is not None:
            env["ORBIT_CARRIER_URL"] = self.carrier.url
            env["ORBIT_CARRIER_TOKEN"] = TOKEN
        env.update(self.extra_env)
        return env

    def group_runs(self, root_run_id: str) -> list[DagsterRun]:
        """The root run and every run Dagster groups under it."""
        runs = list(self.instance.get_runs(RunsFilter(tags={"dagster/root_run_id": root_run_id})))
        root = self.instance.get_run_by_id(root_run_id)
        return ([root] if root is not None else []) + [r for r in runs if r.run_id != root_run_id]

    def beats(self, run_ids: list[str]) -> list[Heartbeat]:
        """Heartbeats of these runs' row steps."""
        with self.engine.connect() as conn:
            return heartbeats_for_runs(conn, run_ids)

    def daemon_alive(self) -> bool:
        """Whether the current daemon process still runs."""
        return self.daemon is not None and self.daemon.poll() is None

    def kill_daemon_only(self) -> int:
        """SIGKILL the daemon process alone (its code server and runs are left as they are,
        as when a daemon crashes). Its process group stays in ``children`` for the cleanup."""
        assert self.daemon is not None
        pid = self.daemon.pid
        os.kill(pid, 9)
        self.daemon.wait(timeout=30)
        return pid

    def ours(self, pid: int) -> bool:
        """Whether ``pid`` is a process of our deployment (in the process group of one of
        the children we started), so a recycled pid of someone else's is never killed."""
        entry = _process_table().get(pid)
        return entry is not None and entry[2] in {proc.pid for proc in self.children.procs}

    def run_worker_pids(self) -> list[int]:
        """Run workers of our deployment, wherever their code server now is.

        A code server starts each run worker with multiprocessing (spawn), so run workers
        are the spawned children of a ``dagster api grpc`` process; they stay in the process
        group of the daemon that started that code server even after that daemon died."""
        table = _process_table()
        groups = {proc.pid for proc in self.children.procs}
        servers = {
            pid
            for pid, (args, _ppid, pgid) in table.items()
            if "api grpc" in args and pgid in groups
        }
        return [
            pid
            for pid, (args, ppid, _pgid) in table.items()
            if ppid in servers and "spawn_main" in args
        ]


def _process_table() -> dict[int, tuple[str, int, int]]:
    """pid -> (args, ppid, pgid) of every process."""
    out = subprocess.run(
        ["ps", "-e", "-ww", "-o", "pid=,ppid=,pgid=,args="],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    table: dict[int, tuple[str, int, int]] = {}
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4:
            table[int(parts[0])] = (parts[3], int(parts[1]), int(parts[2]))
    return table


__all__ = ["CHAOS_SETTINGS", "TERMINAL", "ChaosHarness"]
