"""The code-server gap: SIGKILL of the code server with its run worker -> recovery launch.

The recovery sensor runs inside the code server, so while no code server runs nobody
looks. Two deployments of the recovery e2e code location, each in a fresh database:

- ``daemon``: the workspace names a Python module and ``dagster-daemon`` starts the code
  server itself (what ``orbit dev`` and the tests do). After a kill the daemon starts a new
  one only when it refreshes its workspace, every 60 s (``RELOAD_WORKSPACE_INTERVAL`` in
  ``dagster._daemon.controller``, a constant; no dagster.yaml or env setting changes it).
- ``supervised``: the code server runs as its own process (``dagster code-server start``
  on a fixed port; the workspace names it with ``grpc_server``), restarted at once when it
  exits, as systemd's ``Restart=always`` or a Kubernetes Deployment would. The daemon keeps
  its client for the location and reaches the new server on the same port.

Each round launches ``rows_job`` (one slow row step), waits for 5 rows, SIGKILLs the code
server together with the run worker, and measures from the kill to the recovery run's
creation. Sensor every 2 s (``ORBIT_RECOVERY_INTERVAL_S``); the dead worker is found by pid.

    python bench/code_server_gap.py [--modes daemon,supervised] [--rounds 1]

Prints one JSON line per round. Needs the Postgres in ``ORBIT_TEST_POSTGRES_URL`` or on
127.0.0.1:5432; every process runs in its own process group and is killed by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from orbit_pipelines.dagster_io.dagster_home import dagster_env, prepare_dagster_home
from orbit_pipelines.processes import ChildProcesses
from orbit_pipelines.store.engine import connect_store
from orbit_pipelines_tests.postgres import LOCAL_URL, TEST_URL_ENV, create_database, drop_database
from orbit_pipelines_tests.sensors.harness import BIN, LOCATION, REPO_ROOT, Harness

MODULE = "orbit_pipelines_tests.sensors.e2e_location"
# Logged once per load, by ``api grpc`` and by ``code-server start``'s child alike.
STARTED = "Started Dagster code server for module"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Supervisor:
    """Keeps one ``dagster code-server start`` running: restarts it as soon as it exits."""

    def __init__(self, harness: Harness, port: int, *, proxy: bool) -> None:
        self.harness = harness
        self.port = port
        self.proxy = proxy
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _start(self) -> None:
        # ``code-server start`` is a proxy that loads the code in a child ``api grpc``
        # process; ``api grpc`` alone loads it in one process.
        command = ["code-server", "start"] if self.proxy else ["api", "grpc"]
        self.proc = self.harness.children.start(
            [
                str(BIN / "dagster"),
                *command,
                "-m",
                MODULE,
                "-d",
                str(REPO_ROOT),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--location-name",
                LOCATION,
            ],
            env=self.harness.env(),
            cwd=REPO_ROOT,
            log_path=self.harness.tmp / "code_server.log",
        )

    def start(self) -> None:
        self._start()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            if self.proc is not None and self.proc.poll() is not None:
                self.restarts.append(time.monotonic())
                self._start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _wait(predicate: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return None


def one_round(mode: str, admin: str) -> dict[str, Any]:
    """One kill in a fresh database and Dagster home; returns the JSON line's fields."""
    db_url = create_database(admin, prefix="orbit_gap")
    children = ChildProcesses()
    scratch = Path(tempfile.mkdtemp(prefix=f"code_server_gap_{mode}_"))
    saved = dict(os.environ)
    supervisor: Supervisor | None = None
    try:
        engine = connect_store(db_url, pooled=True)
        home = prepare_dagster_home(scratch / "dagster_home")
        os.environ.update(dagster_env(home, db_url, base={}))
        harness = Harness(home=home, db_url=db_url, engine=engine, children=children, tmp=scratch)
        if mode in ("supervised", "supervised_grpc"):
            port = _free_port()
            harness.workspace.write_text(
                "load_from:\n"
                "  - grpc_server:\n"
                "      host: 127.0.0.1\n"
                f"      port: {port}\n"
                f"      location_name: {LOCATION}\n"
            )
            supervisor = Supervisor(harness, port, proxy=mode == "supervised")
            supervisor.start()
            log = scratch / "code_server.log"
            loaded = _wait(lambda: log.exists() and STARTED in log.read_text(), 120)
            assert loaded, "the code server did not load"
        harness.start_daemon()
        run_id = harness.launch("rows_job", {"rows": 400, "row_sleep_s": 0.2})
        _host, pid = harness.wait_rows(run_id, 5, timeout_s=180)
        in_group = None
        if supervisor is not None:
            assert supervisor.proc is not None
            in_group = os.getpgid(pid) == supervisor.proc.pid
            os.killpg(supervisor.proc.pid, signal.SIGKILL)  # the server, its children: one group
        else:
            for server in harness.code_server_pids():
                os.kill(server, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        loaded_s = None
        if supervisor is not None:
            log = scratch / "code_server.log"
            if _wait(lambda: log.read_text().count(STARTED) >= 2, timeout_s=240):
                loaded_s = round(time.monotonic() - killed, 1)
        child = _wait(lambda: harness.children_of(run_id), timeout_s=240)
        gap = time.monotonic() - killed if child else None
        restarted = (
            supervisor.restarts[0] - killed
            if supervisor is not None and supervisor.restarts
            else None
        )
        engine.dispose()
        return {
            "mode": mode,
            "kill_to_recovery_launch_s": None if gap is None else round(gap, 1),
            "kill_to_code_server_restart_s": None if restarted is None else round(restarted, 1),
            "kill_to_code_server_loaded_s": loaded_s,
            "recovered": bool(child),
            "run_worker_in_code_server_group": in_group,
            "sensor_interval_s": int(harness.settings_env["ORBIT_RECOVERY_INTERVAL_S"]),
        }
    finally:
        # First the supervisor, or it would restart the code server the reaping just killed.
        if supervisor is not None:
            supervisor.stop()
        children.stop_all()
        os.environ.clear()
        os.environ.update(saved)
        drop_database(admin, db_url)


def main(argv: list[str] | None = None) -> int:
    """Run the rounds; one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="daemon,supervised,supervised_grpc")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    admin = os.environ.get(TEST_URL_ENV) or LOCAL_URL
    for _ in range(args.rounds):
        for mode in args.modes.split(","):
            print(json.dumps(one_round(mode, admin)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
