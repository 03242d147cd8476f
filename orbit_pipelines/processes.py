"""Child processes (a carrier, a Dagster daemon): started in their own process group, always reaped.

``orbit demo`` and the tests start every process through ``ChildProcesses``; leaving the
``with`` block kills each group by its own pid, so a failure leaves nothing running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType


class ChildProcesses:
    """Start and reap child processes; each runs in a new session (its own process group)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``args``; stdout and stderr go to ``log_path`` (or are discarded)."""
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(
            list(args),
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if log_path:
            out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it has not gone."""
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # The leader may be gone while children of its group live on: kill the group anyway.
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=timeout_s)

    def stop_all(self) -> None:
        """Stop every process started here, newest first."""
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()

    def __enter__(self) -> ChildProcesses:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for(
    predicate: Callable[[], object], *, timeout_s: float, interval_s: float = 0.25, what: str = ""
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.0f}s waiting for {what or predicate}"
            )
        time.sleep(interval_s)
