"""SIGKILL a real process running a 10,000-row step at random moments, 20+ times."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import Engine, text

from orbit_pipelines_tests.execution.crash_child import IDEMPOTENT_EVERY, RECEIVER_DDL
from orbit_pipelines_tests.processes import ChildProcesses, wait_for

ROWS = 10_000
BATCH = 100
KILLS = 20


def test_sigkill_at_random_moments_every_row_and_effect_exactly_once(
    engine: Engine, db_url: str, children: ChildProcesses, tmp_path: Path
) -> None:
    with engine.begin() as conn:
        for statement in RECEIVER_DDL.split(";"):
            if statement.strip():
                conn.execute(text(statement))
    seed = int(time.time())
    rng = random.Random(seed)
    args = [sys.executable, "-m", "orbit_pipelines_tests.execution.crash_child"]
    args += [db_url, str(tmp_path), str(ROWS), str(BATCH)]
    log = tmp_path / "child.log"

    kills = 0
    while kills < KILLS:
        (tmp_path / "ready").unlink(missing_ok=True)
        proc = children.start(args, log_path=log)
        wait_for(
            lambda p=proc: (tmp_path / "ready").exists() or p.poll() is not None,
            timeout_s=60,
            interval_s=0.01,
            what="the child to start its rows",
        )
        time.sleep(rng.uniform(0.05, 0.5))
        if proc.poll() is not None:
            break  # finished before we could kill it: the step was too short
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        kills += 1
    assert kills == KILLS, f"the step finished after only {kills} kills (seed {seed})"

    started = time.monotonic()
    final = children.start(args, log_path=log)
    assert final.wait(timeout=300) == 0, log.read_text()[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())

    with engine.connect() as conn:
        statuses = dict(
            conn.execute(text("SELECT status, count(*) FROM orbit.step_rows GROUP BY status")).all()
        )
        tx = conn.execute(
            text("SELECT count(*), min(applied), max(applied) FROM receiver_tx")
        ).one()
        idem = conn.execute(
            text("SELECT count(*), max(applied), sum(requests) FROM receiver_idem")
        ).one()
        ledger = dict(
            conn.execute(text("SELECT status, count(*) FROM orbit.effects GROUP BY status")).all()
        )
        saved = dict(
            conn.execute(
                text("SELECT name, state FROM orbit.aggregation_state WHERE step_key = 'rows'")
            ).all()
        )
    crash_free = {"sum": sum(range(ROWS)), "count": ROWS}
    assert statuses == {"done": ROWS}, f"seed {seed}"
    assert tuple(tx) == (ROWS, 1, 1), f"transactional effects exactly once (seed {seed})"
    assert idem[0] == ROWS // IDEMPOTENT_EVERY and idem[1] == 1, (
        f"idempotent effects applied once (seed {seed})"
    )
    assert idem[2] - ROWS // IDEMPOTENT_EVERY <= kills, (
        "at most the one in-flight request repeated per kill"
    )
    assert ledger == {"succeeded": ROWS + ROWS // IDEMPOTENT_EVERY}
    assert saved == crash_free and summary["aggregations"] == crash_free, f"seed {seed}"

    invocations = Counter(int(line) for line in (tmp_path / "invocations").read_text().split())
    assert set(invocations) == set(range(ROWS))
    recomputed = sum(invocations.values()) - ROWS
    assert recomputed <= BATCH * kills, f"{recomputed} rows redone over {kills} kills (seed {seed})"
    print(
        f"crash test: {kills} kills, {recomputed} rows recomputed, seed {seed}, "
        f"last run {time.monotonic() - started:.1f}s: {summary}"
    )
