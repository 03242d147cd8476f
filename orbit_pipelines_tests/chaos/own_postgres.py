"""A Postgres server of the chaos runner's own, which it may crash and restart.

The shared server on 127.0.0.1:5432 is used by every other test and helper: the chaos runner
never touches it. It runs ``initdb`` in a temporary directory and starts ``postgres`` on a
free port as a child process (its own process group, reaped by pid). As root, the server
runs as the ``postgres`` user (Postgres refuses to run as root).

"Restart" is a crash: SIGQUIT to the postmaster (immediate shutdown, no checkpoint, clients
cut off mid-transaction), a pause, then a start that replays the WAL.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg

from orbit_pipelines.processes import ChildProcesses, wait_for

DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")
RUN_AS = "postgres"


def postgres_bin_dir() -> Path:
    """Where ``initdb`` and ``postgres`` are: Debian's Postgres 15, else pgserver's copy."""
    if (DEBIAN_BIN / "initdb").exists():
        return DEBIAN_BIN
    try:
        import pgserver  # noqa: F401  (only to locate its bundled binaries)
    except ImportError as exc:
        raise RuntimeError("no Postgres binaries: install postgresql-15 or pgserver") from exc
    import pgserver._commands as commands

    return Path(commands.POSTGRES_BIN_PATH)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OwnPostgres:
    """One throw-away Postgres cluster under ``root``."""

    def __init__(self, children: ChildProcesses, root: Path) -> None:
        self.children = children
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"
        self.bin = postgres_bin_dir()
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        """Admin URL (trust auth, user postgres)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", RUN_AS, "--", *argv]

    def init(self) -> OwnPostgres:
        """``initdb`` a new cluster."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam(RUN_AS)
            for path in (self.root, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            # The parents of a temp dir are root's; the server only needs to traverse them.
            parent = self.root.parent
            os.chmod(parent, os.stat(parent).st_mode | 0o711)
        subprocess.run(
            self._as_owner(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        return self

    def start(self) -> None:
        """Start the server on ``self.port`` and wait until it accepts connections.

        fsync is off: we crash the server, not the machine, so what reached the kernel
        survives. synchronous_commit stays on: with it off, a crash loses acknowledged
        commits, which would be a lie of the server, not something to recover from.
        """
        argv = [
            str(self.bin / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.sockets),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "shared_buffers=64MB",
        ]
        self.proc = self.children.start(self._as_owner(argv), log_path=self.log)
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"postgres exited {proc.returncode}; see {self.log}")
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return True
            except psycopg.Error:
                return False

        wait_for(ready, timeout_s=120, what="our own Postgres to accept connections")

    def postmaster_pid(self) -> int | None:
        """The server's pid from ``postmaster.pid`` (the child may be ``runuser``)."""
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def crash(self) -> None:
        """Immediate shutdown (SIGQUIT): every backend dies, nothing is flushed."""
        self._signal_and_wait(signal.SIGQUIT)

    def restart(self, down_s: float = 0.0) -> None:
        """Crash the server, stay down ``down_s`` seconds, start it again (WAL replay)."""
        self.crash()
        time.sleep(down_s)
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then reap the process group."""
        self._signal_and_wait(signal.SIGINT)

    def _signal_and_wait(self, sig: signal.Signals) -> None:
        proc = self.proc
        if proc is None:
            return
        pid = self.postmaster_pid()
        if pid is not None and proc.poll() is None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self.children.stop(proc)
        self.children.procs.remove(proc)
        self.proc = None

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
