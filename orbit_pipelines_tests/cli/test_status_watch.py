"""`orbit status RUN_ID --watch` against real runs (real daemon, real sensor, real SIGKILL):
progress lines while a step runs, the recovery run followed, the outcome and its exit code,
Ctrl-C that stops watching cleanly."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from sqlalchemy import Engine

from orbit_pipelines.cli.watch import _Rates, _Screen, step_line
from orbit_pipelines.recovery.overview import StepView
from orbit_pipelines.store.heartbeats import Heartbeat
from orbit_pipelines_tests.cli.conftest import CliResult
from orbit_pipelines_tests.processes import ChildProcesses, wait_for
from orbit_pipelines_tests.sensors.harness import REPO_ROOT, Harness

# Enough rows that the run is still going when the watcher (a fresh Python) is up, under load.
ROWS = 200
PROGRESS = re.compile(
    r"process_rows  (\d+)/200 rows \(\d+%\)  (?:[\d.]+ rows/s  ETA \S+|rows/s: measuring  ETA \?)"
    r"  heartbeat \S+ ago  host \S+ pid (\d+)"
)


def test_step_line_shows_rate_eta_heartbeat_and_where() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    beat = Heartbeat(
        "r", "send", "r", "worker-1", 4242, 50, 200, now, now, now - timedelta(seconds=3)
    )
    step = StepView("send", "IN_PROGRESS", {"done": 50}, 200, beat)
    assert step_line(step, 5.0, now, 30) == (
        "send  50/200 rows (25%)  5.0 rows/s  ETA 30s  heartbeat 3s ago  host worker-1 pid 4242"
    )
    stale = step_line(step, None, now + timedelta(seconds=60), 30)
    assert "rows/s: measuring  ETA ?" in stale and "(stale: the worker may be dead" in stale
    rates = _Rates()
    assert rates.add(("r", "send"), 0.0, 10) is None
    assert rates.add(("r", "send"), 2.0, 20) == 5.0


def _watch(harness: Harness, run_id: str, log: Path) -> subprocess.Popen[bytes]:
    """The console script's code in its own process, output to a file (not a terminal)."""
    return harness.children.start(
        [
            sys.executable,
            "-m",
            "orbit_pipelines.cli",
            "status",
            run_id,
            "--watch",
            "--interval",
            "0.5",
        ],
        env=harness.env(),
        cwd=REPO_ROOT,
        log_path=log,
    )


def _text(log: Path) -> str:
    return log.read_text() if log.exists() else ""


@pytest.fixture
def harness(
    dagster_home: Path, db_url: str, engine: Engine, children: ChildProcesses, tmp_path: Path
) -> Harness:
    """The recovery e2e deployment (its code location: orbit_pipelines_tests.sensors)."""
    return Harness(home=dagster_home, db_url=db_url, engine=engine, children=children, tmp=tmp_path)


@pytest.mark.e2e
def test_watch_follows_a_killed_run_into_its_recovery_until_success(harness: Harness) -> None:
    harness.start_daemon()
    run_id = harness.launch("rows_job", {"rows": ROWS, "row_sleep_s": 0.2})
    _host, pid = harness.wait_rows(run_id, 3)
    log = harness.tmp / "watch.log"
    watcher = _watch(harness, run_id, log)
    wait_for(lambda: len(PROGRESS.findall(_text(log))) >= 3, timeout_s=120, what="progress lines")
    os.kill(pid, signal.SIGKILL)
    code = watcher.wait(timeout=300)
    text = _text(log)
    assert code == 0, text
    assert "Traceback" not in text
    lines = text.splitlines()
    progress = [m for line in lines if (m := PROGRESS.search(line))]
    assert {int(m.group(2)) for m in progress} >= {pid}
    assert any("rows/s  ETA" in line for line in lines), text
    # Non-tty: one timestamped line per refresh, never redrawn.
    assert all(
        re.match(r"\d\d:\d\d:\d\d  process_rows", line) for line in lines if PROGRESS.search(line)
    )
    (child,) = harness.children_of(run_id)
    assert f"now watching run {child.run_id} of run group {run_id}" in text
    assert lines[-1].startswith(f"run group {run_id} succeeded: run {child.run_id} SUCCESS"), text
    assert harness.effects_per_row(run_id) == dict.fromkeys(range(ROWS), 1)


@pytest.mark.e2e
def test_watch_ends_with_exit_1_when_a_person_is_needed_and_ctrl_c_stops_cleanly(
    harness: Harness,
) -> None:
    harness.start_daemon()
    run_id = harness.launch("manual_rows_job", {"rows": ROWS, "row_sleep_s": 0.2})
    _host, pid = harness.wait_rows(run_id, 3)
    first, second = harness.tmp / "first.log", harness.tmp / "second.log"
    interrupted = _watch(harness, run_id, first)
    watcher = _watch(harness, run_id, second)
    wait_for(lambda: PROGRESS.search(_text(first)), timeout_s=120, what="a progress line")
    interrupted.send_signal(signal.SIGINT)
    assert interrupted.wait(timeout=60) == 130
    stopped = _text(first)
    assert "Traceback" not in stopped and "KeyboardInterrupt" not in stopped
    assert "stopped watching; the run goes on" in stopped
    assert harness.instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED  # type: ignore[union-attr]

    wait_for(lambda: PROGRESS.search(_text(second)), timeout_s=120, what="a progress line")
    os.kill(pid, signal.SIGKILL)
    code = watcher.wait(timeout=300)
    text = _text(second)
    assert code == 1, text
    assert "Traceback" not in text
    assert f"run group {run_id} is " in text
    assert "Next: nothing automatic: automatic recovery is off for this job" in text, text
    assert harness.children_of(run_id) == []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_lines_are_redrawn_in_place() -> None:
    out = _Terminal()
    screen = _Screen(out)
    screen.refresh(["a 1/2 rows", "b 0/2 rows"])
    screen.refresh(["a 2/2 rows", "b 1/2 rows"])
    screen.say("done")
    text = out.getvalue()
    # The second refresh moves the cursor back up two lines and clears each one it redraws.
    assert text == (
        "\x1b[2Ka 1/2 rows\n\x1b[2Kb 0/2 rows\n\x1b[2F\x1b[2Ka 2/2 rows\n\x1b[2Kb 1/2 rows\ndone\n"
    )


def test_watch_usage_errors_exit_2(orbit_cli: Callable[..., CliResult]) -> None:
    both = orbit_cli("status", "some-run", "--watch", "--json")
    assert both.returncode == 2
    assert "one snapshot" in json.loads(both.stdout)["error"]["message"]
    zero = orbit_cli("status", "some-run", "--watch", "--interval", "0")
    assert zero.returncode == 2 and "--interval must be more than 0" in zero.stderr
