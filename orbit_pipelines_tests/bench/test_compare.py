"""bench/compare.py end to end on a small job: real workers, a real SIGKILL, real recovery.

Only orbit runs here: DBOS is a bench-only extra that CI does not install, and each
system costs four Dagster processes, so one keeps the test well under a minute. The
timings are not checked (they belong in the bench's own output), only the output's shape
and what must hold whatever the speed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from orbit_pipelines_tests.processes import ChildProcesses

REPO = Path(__file__).resolve().parents[2]
ROWS = 300
BATCH = 50
KEYS = {
    "system",
    "rows",
    "wall_s_no_crash",
    "rows_per_s",
    "rows_redone_after_kill",
    "duplicate_effects",
    "wall_s_with_kill",
}


def test_orbit_resumes_at_the_killed_batch_and_delivers_each_effect_once(
    pg_admin_url: str, tmp_path: Path, children: ChildProcesses
) -> None:
    log = tmp_path / "compare.out"
    proc = children.start(
        [
            sys.executable,
            str(REPO / "bench" / "compare.py"),
            "--rows",
            str(ROWS),
            "--systems",
            "orbit",
            "--orbit-batch-size",
            str(BATCH),
            "--workdir",
            str(tmp_path / "work"),
        ],
        env=dict(os.environ, ORBIT_POSTGRES_URL=pg_admin_url),
        cwd=REPO,
        log_path=log,
    )
    assert proc.wait(timeout=240) == 0, log.read_text()[-4000:]

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert len(lines) == 2, lines
    orbit, ratios = lines
    assert set(orbit) >= KEYS
    assert "ratios" in ratios
    assert orbit["system"] == "orbit"
    assert orbit["rows"] == ROWS
    assert orbit["clean_run_invocations"] == ROWS
    assert orbit["clean_run_duplicate_effects"] == 0
    # Killed at row 150 after its effect: rows 0-149 were committed in three batches of 50,
    # so only the killed row runs again; its effect had not committed, so nothing doubles.
    assert orbit["kill_at_row"] == ROWS // 2
    assert orbit["rows_redone_after_kill"] == 1
    assert orbit["duplicate_effects"] == 0
    assert orbit["missing_effects_after_kill"] == 0
