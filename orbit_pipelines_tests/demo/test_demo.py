"""`orbit demo` end to end: a real subprocess, a real daemon, carrier and SIGKILLed shard.

The demo runs against the test server in a database of its own (``--database``), with its
own ORBIT_HOME, so it cannot clash with other tests or another demo; the database is
dropped afterwards.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import pytest

from orbit_examples.demo import drop_demo_database
from orbit_pipelines_tests.processes import ChildProcesses, wait_for

ORDERS = 200
BATCH_SIZE = 50  # ShipConfig's default: at most one batch is lost to the kill


def _processes_with(marker: str) -> list[str]:
    """Command lines of live processes whose environment mentions ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(
                    Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
        except OSError:
            continue
    return found


@pytest.mark.e2e
def test_orbit_demo_recovers_the_killed_shard_exactly_once(
    pg_admin_url: str, tmp_path: Path, children: ChildProcesses
) -> None:
    database = f"orbit_demo_t{uuid.uuid4().hex[:12]}"
    home = tmp_path / "orbit"
    env = dict(os.environ, ORBIT_POSTGRES_URL=pg_admin_url, ORBIT_HOME=str(home))
    env.pop("DAGSTER_HOME", None)
    report_path = tmp_path / "report.json"
    log = tmp_path / "demo.log"
    argv = [
        sys.executable, "-m", "orbit_pipelines.cli", "demo", "--json",
        "--database", database, "--orders", str(ORDERS), "--shards", "2",
        "--kill-after", "60", "--sensor-interval", "2", "--timeout", "300",
    ]  # fmt: skip
    # exec: the shell becomes the demo (same pid, reaped by the fixture); stdout alone is
    # the report, so the test also checks that --json prints nothing else there.
    shell = f'exec "$@" > "{report_path}"'
    try:
        proc = children.start(["sh", "-c", shell, "sh", *argv], env=env, log_path=log)
        wait_for(lambda: proc.poll() is not None, timeout_s=420, what="orbit demo to exit")
        output = log.read_text()
        assert proc.returncode == 0, output[-4000:]
        report = json.loads(report_path.read_text())
    finally:
        drop_demo_database(pg_admin_url, database)

    assert report["ok"] is True and report["reason"] is None, output[-4000:]
    assert report["final_status"] == "SUCCESS"
    assert report["orders"] == ORDERS
    assert report["shipments_created"] == ORDERS
    assert report["duplicate_shipments"] == 0
    assert report["orders_tracked"] == ORDERS
    assert report["tracking_mismatches"] == 0 and report["mismatch_sample"] == []
    assert report["recovery_runs"] >= 1
    # The sensor recorded how the recovery ended before the demo stopped the daemon.
    assert report["recovery_outcomes"][-1] == "SUCCESS"
    # Only the batch in flight when the shard died is done again, never the whole shard.
    assert 1 <= report["rows_redone"] <= BATCH_SIZE
    # The carrier saw each order's key; repeats (a call in flight at the kill) are replays.
    assert report["carrier_requests"] - report["carrier_repeat_requests"] == ORDERS
    assert report["kill_to_recovery_launch_s"] is not None
    assert (
        report["run_group"] in report["ui_url"]
        or report["recovery_run_ids"][-1] in (report["ui_url"])
    )
    assert database in report["ui_command"] and "orbit dev" in report["ui_command"]
    # Every process the demo started (carrier, daemon, code server, run workers) is gone.
    assert _processes_with(str(home)) == []
