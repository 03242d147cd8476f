"""The embedded Postgres used when ``ORBIT_POSTGRES_URL`` is unset.

A real Postgres server (the ``pgserver`` package ships the binaries) whose data directory
lives under ``$ORBIT_HOME/pgdata``. It is started on first use and left running, so every
later process (the CLI, the Dagster daemon, run workers) finds and reuses the same server.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

from orbit_pipelines.errors import E2006_EMBEDDED_FAILED, OrbitError
from orbit_pipelines.store.urls import orbit_home


def embedded_data_dir(home: Path | None = None) -> Path:
    """The embedded server's data directory."""
    return (home or orbit_home()) / "pgdata"


def embedded_url(home: Path | None = None) -> str:
    """Start the embedded Postgres if it is not running, and return its URL."""
    data_dir = embedded_data_dir(home)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR on headless machines; it has a fallback.
        warnings.simplefilter("ignore")
        try:
            import pgserver

            # cleanup_mode=None: the server outlives this process, to be reused by the next.
            server = pgserver.get_server(data_dir, cleanup_mode=None)
            url: str = server.get_uri()
        except Exception as exc:
            raise OrbitError(
                E2006_EMBEDDED_FAILED,
                f"could not start the embedded Postgres in {data_dir}: {exc}",
                hint="set ORBIT_POSTGRES_URL to use an existing Postgres server instead",
            ) from exc
    return url


def embedded_pid(home: Path | None = None) -> int | None:
    """The postmaster pid of the embedded server, or None when it is not running."""
    pid_file = embedded_data_dir(home) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        # The server runs as the unprivileged "pgserver" user when we are root: it exists.
        return pid
    return pid


def stop_embedded(home: Path | None = None, timeout_s: float = 30.0) -> bool:
    """Stop the embedded server (fast shutdown). Returns False when it was not running."""
    pid = embedded_pid(home)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)  # SIGINT = "fast" shutdown: roll back, close, exit.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if embedded_pid(home) is None:
            return True
        time.sleep(0.1)
    raise OrbitError(
        E2006_EMBEDDED_FAILED, f"embedded Postgres (pid {pid}) did not stop in {timeout_s:.0f}s"
    )
