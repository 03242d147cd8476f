"""Real Dagster processes for the recovery e2e tests: a daemon (which runs the code server
and evaluates the sensor), runs launched through the queue, and helpers to find and kill
the processes of a run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from sqlalchemy import Engine, text

from orbit_pipelines.dagster_io.dagster_home import dagster_env
from orbit_pipelines.store.heartbeats import heartbeats_for_runs
from orbit_pipelines_tests.processes import ChildProcesses, wait_for
from orbit_pipelines_tests.sensors.e2e_location import TEST_TABLES

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "orbit_e2e"

# Fast settings so each test takes seconds; one test runs with the defaults instead.
FAST = {
    "ORBIT_RECOVERY_INTERVAL_S": "2",
    "ORBIT_RECOVERY_HEARTBEAT_TIMEOUT_S": "5",
    "ORBIT_RECOVERY_STALL_TIMEOUT_S": "6",
    "ORBIT_RECOVERY_BACKOFF_BASE_S": "2",
    "ORBIT_RECOVERY_TERMINATE_WAIT_S": "3",
}


@dataclass
class Harness:
    """One test's Dagster deployment on its own database."""

    home: Path
    db_url: str
    engine: Engine
    children: ChildProcesses
    tmp: Path
    settings_env: dict[str, str] = field(default_factory=lambda: dict(FAST))
    daemon: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        with self.engine.begin() as conn:
            for ddl in TEST_TABLES:
                conn.execute(text(ddl))
        self.workspace = self.tmp / "workspace.yaml"
        self.workspace.write_text(
            "load_from:\n"
            "  - python_module:\n"
            "      module_name: orbit_pipelines_tests.sensors.e2e_location\n"
            f"      location_name: {LOCATION}\n"
            f"      working_directory: {REPO_ROOT}\n"
        )
        self.instance = DagsterInstance.get()

    def env(self) -> dict[str, str]:
        """Environment of every Dagster process of the test."""
        env = dagster_env(self.home, self.db_url)
        for key in list(env):
            if key.startswith("ORBIT_RECOVERY_"):
                del env[key]
        env.update(self.settings_env)
        env["PYTHONPATH"] = str(REPO_ROOT)
        return env

    def start_daemon(self) -> subprocess.Popen[bytes]:
        """``dagster-daemon run``: queue, sensors (in the code server it starts), monitoring."""
        self.daemon = self.children.start(
            [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)],
            env=self.env(),
            cwd=REPO_ROOT,
            log_path=self.tmp / "daemon.log",
        )
        return self.daemon

    def start_dagster_dev(self) -> subprocess.Popen[bytes]:
        """``dagster dev`` (webserver + daemon, each with its own code server) on a free port."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.daemon = self.children.start(
            [str(BIN / "dagster"), "dev", "-w", str(self.workspace), "-p", str(port)],
            env=self.env(),
            cwd=REPO_ROOT,
            log_path=self.tmp / "dagster_dev.log",
        )
        return self.daemon

    def launch(self, job_name: str, config: dict[str, object], op: str = "process_rows") -> str:
        """Submit a run whose one row op takes ``config``; returns its id."""
        return self.launch_job(job_name, {"ops": {op: {"config": config}}})

    def launch_job(
        self, job_name: str, run_config: dict[str, Any], run_id: str | None = None
    ) -> str:
        """``dagster job launch`` through the daemon's queue, as the UI would; the run id
        (chosen here, so a fast failure's recovery run cannot be mistaken for it)."""
        run_id = run_id or str(uuid.uuid4())
        done = subprocess.run(
            [
                str(BIN / "dagster"),
                "job",
                "launch",
                "-w",
                str(self.workspace),
                "-j",
                job_name,
                "--run-id",
                run_id,
                "--config-json",
                json.dumps(run_config),
            ],
            env=self.env(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"dagster job launch failed: {done.stderr[-3000:]}"
        return run_id

    def wait_rows(
        self, run_id: str, rows: int, timeout_s: float = 90, step: str = "process_rows"
    ) -> tuple[str, int]:
        """Wait until ``step`` of ``run_id`` beat with >= ``rows`` done; (host, pid)."""

        def ready() -> tuple[str, int] | None:
            with self.engine.connect() as conn:
                for beat in heartbeats_for_runs(conn, [run_id]):
                    if beat.step_key == step and beat.rows_done >= rows:
                        return beat.host, beat.pid
            return None

        return wait_for(ready, timeout_s=timeout_s, what=f"{rows} rows of {run_id}")  # type: ignore[return-value]

    def children_of(self, run_id: str) -> list[DagsterRun]:
        """Runs re-executing ``run_id``."""
        return list(self.instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": run_id})))

    def wait_child(self, run_id: str, timeout_s: float = 120) -> DagsterRun:
        """Wait for the recovery run of ``run_id`` to be created."""
        found = wait_for(
            lambda: self.children_of(run_id), timeout_s=timeout_s, what=f"recovery of {run_id}"
        )
        return found[0]  # type: ignore[index]

    def wait_status(
        self, run_id: str, statuses: tuple[DagsterRunStatus, ...], timeout_s: float = 120
    ) -> DagsterRun:
        """Wait until the run reaches one of ``statuses``."""

        def reached() -> DagsterRun | None:
            run = self.instance.get_run_by_id(run_id)
            return run if run is not None and run.status in statuses else None

        return wait_for(reached, timeout_s=timeout_s, what=f"{run_id} in {statuses}")  # type: ignore[return-value]

    def effects_per_row(self, root_run_id: str) -> dict[int, int]:
        """How many times each row's effect happened."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT row_no, count(*) FROM public.e2e_effects WHERE root_run_id = :g"
                    " GROUP BY row_no"
                ),
                {"g": root_run_id},
            )
            return {int(r[0]): int(r[1]) for r in rows}

    def step_runs(self, root_run_id: str) -> list[tuple[str, str]]:
        """(run_id, step) for every time a step body started in the group."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT run_id, step_key FROM public.e2e_step_runs WHERE root_run_id = :g"
                    " ORDER BY at"
                ),
                {"g": root_run_id},
            )
            return [(r[0], r[1]) for r in rows]

    def code_server_pids(self) -> list[int]:
        """Pids of the code servers the daemon started (its child processes)."""
        assert self.daemon is not None
        return _descendants(self.daemon.pid, "grpc")


def _descendants(pid: int, needle: str) -> list[int]:
    out = subprocess.run(
        ["ps", "-e", "-o", "pid=,ppid=,args="], capture_output=True, text=True, check=True
    ).stdout
    tree: dict[int, list[tuple[int, str]]] = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        tree.setdefault(int(parts[1]), []).append((int(parts[0]), parts[2]))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child, args in tree.get(stack.pop(), []):
            stack.append(child)
            if needle in args:
                found.append(child)
    return found


def seconds_since(start: float) -> float:
    """Wall-clock seconds since ``time.monotonic()`` value ``start``."""
    return time.monotonic() - start


__all__ = ["FAST", "Harness", "os", "seconds_since"]
