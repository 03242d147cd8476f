"""SIGKILL a real process running a 10,000-row step at random moments, 20+ times."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from orbit_pipelines_tests.execution.crash_child import IDEMPOTENT_EVERY, RECEIVER_DDL
from orbit_pipelines_tests.execution.fenced_child import RECEIVER_DDL as FX_DDL
from orbit_pipelines_tests.execution.fenced_child import poison_expectations, poison_rows
from orbit_pipelines_tests.processes import ChildProcesses, wait_for

ROWS = 10_000
BATCH = 100
KILLS = 20


def _kill_points(rng: random.Random) -> list[int]:
    """Row counts to kill at, spread over the step: a kill after a random time let a fast
    machine finish the 10,000 rows within 13-16 kills (the assertion below then failed)."""
    return sorted(rng.sample(range(BATCH, ROWS - 2 * BATCH), KILLS))


def _wait_then_pause(
    engine: Engine, proc: subprocess.Popen[bytes], target: int, rng: random.Random
) -> None:
    """Until ``target`` rows are recorded (or the child ended), then a random pause inside
    the batch in flight, so kills land at any moment of a batch."""

    def reached() -> bool:
        with engine.connect() as conn:
            recorded = conn.execute(text("SELECT count(*) FROM orbit.row_outcomes")).scalar_one()
        return recorded >= target or proc.poll() is not None

    wait_for(reached, timeout_s=120, interval_s=0.005, what=f"{target} rows recorded")
    time.sleep(rng.uniform(0, 0.05))


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

    targets = _kill_points(rng)
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
        _wait_then_pause(engine, proc, targets[kills], rng)
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
            conn.execute(
                text("SELECT status, count(*) FROM orbit.row_outcomes GROUP BY status")
            ).all()
        )
        tx = conn.execute(
            text("SELECT count(*), min(applied), max(applied) FROM receiver_tx")
        ).one()
        idem = conn.execute(
            text("SELECT count(*), max(applied), sum(requests) FROM receiver_idem")
        ).one()
        ledger = dict(
            conn.execute(
                text("SELECT status, count(*) FROM orbit.effect_records GROUP BY status")
            ).all()
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


@pytest.mark.parametrize("batch", [100])  # 7 passes too (~3 min): kept out of the suite's budget
def test_sigkill_at_random_moments_with_duplicates_and_poison_rows(
    engine: Engine, db_url: str, children: ChildProcesses, tmp_path: Path, batch: int
) -> None:
    """The same 20 random SIGKILLs, on input with duplicate keys (also an int re-read as a
    float) and poison rows (missing / unusable keys, a value Sum cannot fold, a non-JSON
    emit): every valid row done once, every effect once, poison quarantined with its code,
    duplicates never handled, the sum of a crash-free run."""
    with engine.begin() as conn:
        conn.execute(text(FX_DDL))
    seed = int(time.time())
    rng = random.Random(seed)
    args = [sys.executable, "-m", "orbit_pipelines_tests.execution.fenced_child", db_url]
    args += [str(tmp_path), "--root", "crash-root", "--step", "rows", "--rows", str(ROWS)]
    args += ["--batch", str(batch), "--input", "poison", "--heartbeat", "2"]
    log = tmp_path / "child.log"

    targets = _kill_points(rng)
    kills = 0
    while kills < KILLS:
        run_id = f"run-{kills}"
        proc = children.start([*args, "--run-id", run_id], log_path=log)
        wait_for(
            lambda p=proc, r=run_id: (tmp_path / f"{r}.ready").exists() or p.poll() is not None,
            timeout_s=60,
            interval_s=0.01,
            what="the child to start its rows",
        )
        _wait_then_pause(engine, proc, targets[kills], rng)
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        kills += 1
    assert kills == KILLS, (
        f"the step ended after {kills} kills (seed {seed}): {log.read_text()[-2000:]}"
    )

    final = children.start([*args, "--run-id", "run-final"], log_path=log)
    assert final.wait(timeout=300) == 0, log.read_text()[-3000:]
    summary = json.loads((tmp_path / "run-final.json").read_text())
    expected = poison_expectations(ROWS)

    with engine.connect() as conn:
        ledger = conn.execute(
            text(
                "SELECT status, error_code, count(*) FROM orbit.row_outcomes "
                "WHERE root_run_id = 'crash-root' GROUP BY 1, 2"
            )
        ).all()
        bad_value_keys = conn.execute(
            text(
                "SELECT row_key FROM orbit.row_outcomes WHERE root_run_id = 'crash-root' "
                "AND error_code = 'E-1015'"
            )
        ).scalars()
        bad_value_keys = sorted(int(k) for k in bad_value_keys)
        delivered = conn.execute(
            text("SELECT count(*), count(DISTINCT row_id), max(row_id) FROM public.fx_receiver")
        ).one()
        effects = dict(
            conn.execute(text("SELECT status, count(*) FROM orbit.effect_records GROUP BY 1")).all()
        )
        saved = conn.execute(
            text("SELECT state FROM orbit.aggregation_state WHERE root_run_id = 'crash-root'")
        ).scalar()
    by_status = {(s, c): n for s, c, n in ledger}
    done = len(expected["done"])
    assert by_status.pop(("done", None)) == done, f"seed {seed}: {by_status}"
    assert bad_value_keys == expected["bad_value"], f"seed {seed}"
    by_status.pop(("quarantined", "E-1015"))
    bad_keys = {c: n for (s, c), n in by_status.items()}
    assert set(bad_keys) == {"E-1013", "E-1014"}, f"seed {seed}: {by_status}"
    assert all(s == "quarantined" for s, _ in by_status), by_status
    assert sum(bad_keys.values()) <= expected["bad_key_rows"]
    assert tuple(delivered) == (done, done, ROWS - 1), f"effects once (seed {seed})"
    assert effects == {"succeeded": done}
    assert saved == expected["sum"] and summary["aggregations"] == {"sum": expected["sum"]}

    rows = poison_rows(ROWS)
    invoked = Counter(
        int(line.split()[1]) for line in (tmp_path / "invocations").read_text().splitlines()
    )
    first_valid: dict[int, int] = {}
    for row in rows:
        key = row["id"]
        if isinstance(key, int | float) and not isinstance(key, bool) and key == key:
            first_valid.setdefault(int(key), row["pos"])
    assert set(invoked) == set(first_valid.values()), (
        f"handled positions that are duplicates or bad keys (seed {seed}): "
        f"{sorted(set(invoked) - set(first_valid.values()))[:10]}"
    )
    recomputed = sum(invoked.values()) - len(first_valid)
    assert recomputed <= batch * kills, f"{recomputed} rows redone over {kills} kills (seed {seed})"
    print(f"crash test (duplicates + poison, batch {batch}): {kills} kills, {recomputed} redone")
