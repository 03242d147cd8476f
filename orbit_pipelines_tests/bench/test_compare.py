"""bench/compare.py end to end on a small job: real workers, a real SIGKILL, real recovery.

DBOS is a bench-only extra that CI does not install, so this runs the systems that need
nothing beyond the package itself. The numbers are not checked (timing belongs in the
bench's own output), only the shape of the output and what must hold whatever the speed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from orbit_pipelines_tests.processes import ChildProcesses

REPO = Path(__file__).resolve().parents[2]
ROWS = 300
SYSTEMS = ("dagster",)
KEYS = {
    "system",
    "rows",
    "wall_s_no_crash",
    "rows_per_s",
    "rows_redone_after_kill",
    "duplicate_effects",
    "wall_s_with_kill",
}


def test_compare_prints_one_json_line_per_system_then_ratios(
    pg_admin_url: str, tmp_path: Path, children: ChildProcesses
) -> None:
    log = tmp_path / "compare.out"
    env = dict(os.environ, ORBIT_POSTGRES_URL=pg_admin_url)
    proc = children.start(
        [
            sys.executable,
            str(REPO / "bench" / "compare.py"),
            "--rows",
            str(ROWS),
            "--systems",
            ",".join(SYSTEMS),
            "--workdir",
            str(tmp_path / "work"),
        ],
        env=env,
        cwd=REPO,
        log_path=log,
    )
    assert proc.wait(timeout=240) == 0, log.read_text()[-4000:]

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    results = {line["system"]: line for line in lines if "system" in line}
    assert set(results) == set(SYSTEMS)
    assert "ratios" in lines[-1]
    for name, result in results.items():
        assert set(result) >= KEYS, name
        assert result["rows"] == ROWS
        assert result["clean_run_invocations"] == ROWS
        assert result["clean_run_duplicate_effects"] == 0
        assert result["missing_effects_after_kill"] == 0
    # Dagster retries the failed step from row 0: every row before the kill runs twice,
    # the killed row included, and each of them delivers its effect twice.
    dagster = results["dagster"]
    assert dagster["rows_redone_after_kill"] == ROWS // 2 + 1
    assert dagster["duplicate_effects"] == ROWS // 2 + 1
