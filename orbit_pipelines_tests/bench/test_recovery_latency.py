"""bench/recovery_latency.py with one kill: a real daemon at default settings, a real SIGKILL.

About 30 s on a quiet machine (a daemon start, one run, its recovery). Durations are not
checked (they belong in the bench's output), only that the kill was recovered and the
summary line has the shape the README quotes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from orbit_pipelines_tests.processes import ChildProcesses

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_one_kill_is_recovered_at_the_default_settings(
    pg_admin_url: str, tmp_path: Path, children: ChildProcesses
) -> None:
    out = tmp_path / "latency.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORBIT_RECOVERY_")}
    env["ORBIT_TEST_POSTGRES_URL"] = pg_admin_url
    proc = children.start(
        [
            sys.executable,
            str(REPO / "bench" / "recovery_latency.py"),
            "--kills",
            "1",
            "--idle-s",
            "3",
        ],
        env=env,
        cwd=REPO,
        log_path=out,
    )
    # Generous: under load 20+ a run worker alone can take a minute to start.
    assert proc.wait(timeout=900) == 0, out.read_text()[-4000:]

    lines = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    per_kill, summary = lines[0], lines[-1]
    assert summary["kills"] == 1 and summary["recovered"] == 1, summary
    assert summary["settings"]["overridden"] == []
    for name in ("kill_to_launch_s", "kill_to_started_s", "kill_to_success_s"):
        assert set(summary[name]) == {"p50", "p95", "max"}
        assert summary[name]["p50"] is not None
    assert summary["idle_cpu_s_per_min"] >= 0 and summary["idle_db_xacts_per_min"] >= 0
    assert per_kill["runs_in_group"] >= 2
    assert per_kill["kill_to_launch_s"] <= per_kill["kill_to_success_s"]
