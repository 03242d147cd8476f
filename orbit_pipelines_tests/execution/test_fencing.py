"""Issue 12, item 9: a paused worker that wakes after its step was taken over commits nothing.

Two real processes on one step of one run group. A runs it (slow rows, a transactional
effect per row into a receiver with no unique constraint, a Sum) and freezes itself with
SIGSTOP (a GC pause, a VM freeze) — either between two rows of an open batch, or at the
first row of a batch. B, the recovery (same root_run_id and step, new run_id), must finish
the step while A is frozen. Then A is SIGCONTed: its next commit and its heartbeats are
refused (E-4009), it exits non-zero, and nothing in the database changes because of it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from orbit_pipelines_tests.execution.fenced_child import RECEIVER_DDL
from orbit_pipelines_tests.processes import ChildProcesses, wait_for

ROWS = 40
BATCH = 5
STEP = "fenced"


def _state(proc_pid: int) -> str:
    try:
        stat = Path(f"/proc/{proc_pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    return stat.rsplit(")", 1)[1].split()[0]


def _snapshot(engine: Engine, root: str) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT row_key, status, attempt, run_id, updated_at FROM orbit.row_outcomes "
                "WHERE root_run_id = :r AND step_key = :s ORDER BY row_key"
            ),
            {"r": root, "s": STEP},
        ).all()
        aggs = conn.execute(
            text(
                "SELECT name, state, rows_reflected, updated_at FROM orbit.aggregation_state "
                "WHERE root_run_id = :r AND step_key = :s"
            ),
            {"r": root, "s": STEP},
        ).all()
        beats = conn.execute(
            text(
                "SELECT run_id, rows_done, progress_at, beat_at FROM orbit.heartbeats "
                "WHERE root_run_id = :r ORDER BY run_id"
            ),
            {"r": root},
        ).all()
        receiver = conn.execute(
            text("SELECT row_id, run_id, txid FROM public.fx_receiver WHERE root = :r ORDER BY 1"),
            {"r": root},
        ).all()
        effects = conn.execute(
            text(
                "SELECT key_hash, effect_key, status, attempts, run_id FROM orbit.effect_records "
                "WHERE root_run_id = :r ORDER BY 1"
            ),
            {"r": root},
        ).all()
    return {
        "rows": [tuple(r) for r in rows],
        "aggs": [tuple(a) for a in aggs],
        "beats": {b[0]: tuple(b) for b in beats},
        "receiver": [tuple(r) for r in receiver],
        "effects": [tuple(e) for e in effects],
    }


@pytest.mark.parametrize(
    ("pause_at", "pause_when"),
    [
        pytest.param(12, "after", id="frozen-mid-batch-after-an-effect"),
        pytest.param(10, "before", id="frozen-at-a-batch-start"),
    ],
)
def test_stale_worker_woken_after_takeover_commits_nothing(
    engine: Engine,
    db_url: str,
    children: ChildProcesses,
    tmp_path: Path,
    pause_at: int,
    pause_when: str,
) -> None:
    with engine.begin() as conn:
        conn.execute(text(RECEIVER_DDL))
    root = f"fence-{uuid.uuid4().hex[:8]}"
    base = [sys.executable, "-m", "orbit_pipelines_tests.execution.fenced_child", db_url]
    base += [str(tmp_path), "--root", root, "--step", STEP, "--rows", str(ROWS)]
    base += ["--batch", str(BATCH), "--heartbeat", "0.2"]
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"

    a_args = [*base, "--run-id", "run-A", "--sleep", "0.05", "--sleep-after-pause", "0.4"]
    a_args += ["--pause-at", str(pause_at), "--pause-when", pause_when]
    a = children.start(a_args, log_path=a_log)
    try:
        wait_for(
            lambda: _state(a.pid) == "T" or a.poll() is not None,
            timeout_s=60,
            interval_s=0.02,
            what="A to freeze itself",
        )
        assert a.poll() is None, a_log.read_text()[-3000:]
        frozen = _snapshot(engine, root)
        a_rows = {r[0] for r in frozen["rows"] if r[3] == "run-A"}
        assert a_rows == {str(i) for i in range((pause_at // BATCH) * BATCH)}, frozen["rows"]

        # B, the recovery, finishes the step while A is frozen. A frozen worker may hold
        # locks; B must not wait on them forever.
        started = time.monotonic()
        b = children.start([*base, "--run-id", "run-B"], log_path=b_log)
        try:
            b_rc = b.wait(timeout=90)
        except Exception:
            pytest.fail(
                f"B did not finish in 90 s while A was frozen (blocked by A's open "
                f"transaction?). B log: {b_log.read_text()[-2000:]}"
            )
        b_took = time.monotonic() - started
        assert b_rc == 0, b_log.read_text()[-3000:]
        b_summary = json.loads((tmp_path / "run-B.json").read_text())
        taken_over = _snapshot(engine, root)

        # A wakes: it finishes its rows (slowly, so its heartbeat thread beats meanwhile),
        # then its commit is refused.
        os.killpg(a.pid, signal.SIGCONT)
        a_rc = a.wait(timeout=60)
        a_out = a_log.read_text()
        after = _snapshot(engine, root)
    finally:
        if a.poll() is None:
            children.stop(a)  # SIGTERM then SIGKILL the group; a stopped group dies too

    print(f"B finished the step in {b_took:.1f}s while A was frozen")
    assert a_rc != 0, f"the stale worker exited {a_rc}: {a_out[-2000:]}"
    assert "E-4009" in a_out, a_out[-2000:]

    # Nothing changed because of A: rows, aggregation, effects, receiver, B's heartbeat,
    # and A's own heartbeat was not refreshed (it must keep looking dead).
    assert after["rows"] == taken_over["rows"]
    assert after["aggs"] == taken_over["aggs"]
    assert after["effects"] == taken_over["effects"]
    assert after["receiver"] == taken_over["receiver"]
    assert after["beats"]["run-B"] == taken_over["beats"]["run-B"]
    assert after["beats"].get("run-A") == taken_over["beats"].get("run-A"), (
        "a stale worker's heartbeat refreshed its beat"
    )

    # Every row done once; every effect once at the receiver; the sum of a crash-free run.
    assert [(r[0], r[1], r[2]) for r in after["rows"]] == sorted(
        (str(i), "done", 1) for i in range(ROWS)
    )
    assert sorted(r[0] for r in after["receiver"]) == list(range(ROWS))
    assert {r[0] for r in after["receiver"] if r[1] == "run-A"} == {int(k) for k in a_rows}
    crash_free = sum(range(ROWS))
    assert [(a_[0], a_[1]) for a_ in after["aggs"]] == [("sum", crash_free)]
    assert b_summary["aggregations"] == {"sum": crash_free}
    assert b_summary["done"] == ROWS - len(a_rows)


def test_two_live_executions_of_one_step_the_older_stops_and_nothing_doubles(
    engine: Engine, db_url: str, children: ChildProcesses, tmp_path: Path
) -> None:
    """Split brain without a pause: the recovery starts while the original still runs
    (a false "dead" verdict). The older one must stop at its next write with E-4009."""
    with engine.begin() as conn:
        conn.execute(text(RECEIVER_DDL))
    root = f"split-{uuid.uuid4().hex[:8]}"
    base = [sys.executable, "-m", "orbit_pipelines_tests.execution.fenced_child", db_url]
    base += [str(tmp_path), "--root", root, "--step", STEP, "--rows", str(ROWS)]
    base += ["--batch", str(BATCH), "--heartbeat", "0.2"]
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    gate = tmp_path / "gate"
    # A waits, alive, after row 22's effect (its batch 20..24 open) until B owns the step;
    # then both run at once. Without the gate, a slow machine let A finish before B began.
    a_args = [*base, "--run-id", "run-A", "--sleep", "0.05", "--gate-at", "22"]
    a = children.start([*a_args, "--gate-file", str(gate)], log_path=a_log)

    def a_done() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM orbit.row_outcomes WHERE root_run_id = :r"),
                    {"r": root},
                ).scalar_one()
            )

    try:
        wait_for(lambda: a_done() >= 20 or a.poll() is not None, timeout_s=60, what="A's rows")
        assert a.poll() is None, a_log.read_text()[-2000:]
        b = children.start([*base, "--run-id", "run-B", "--sleep", "0.05"], log_path=b_log)
        wait_for(
            lambda: (tmp_path / "run-B.ready").exists() or b.poll() is not None,
            timeout_s=60,
            what="B to claim the step",
        )
        gate.touch()
        assert b.wait(timeout=120) == 0, b_log.read_text()[-3000:]
        a_rc = a.wait(timeout=60)
    finally:
        children.stop_all()
    a_out = a_log.read_text()
    assert a_rc != 0 and "E-4009" in a_out, (a_rc, a_out[-2000:])

    after = _snapshot(engine, root)
    assert [(r[0], r[1], r[2]) for r in after["rows"]] == sorted(
        (str(i), "done", 1) for i in range(ROWS)
    ), "a row was committed twice"
    a_rows = {int(r[0]) for r in after["rows"] if r[3] == "run-A"}
    assert a_rows == set(range(20)), sorted(a_rows)
    assert sorted(r[0] for r in after["receiver"]) == list(range(ROWS))
    assert {r[0] for r in after["receiver"] if r[1] == "run-A"} == a_rows
    assert [(x[0], x[1]) for x in after["aggs"]] == [("sum", sum(range(ROWS)))]


def _make_role(db_url: str) -> str:
    role = f"orbit_fence_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        for grant in (
            'GRANT USAGE ON SCHEMA orbit TO "{r}"',
            'GRANT ALL ON ALL TABLES IN SCHEMA orbit TO "{r}"',
            'GRANT ALL ON ALL SEQUENCES IN SCHEMA orbit TO "{r}"',
            'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{r}"',
        ):
            admin.execute(grant.format(r=role))
    return role


def _drop_roles(db_url: str, roles: list[str]) -> None:
    with psycopg.connect(db_url, autocommit=True) as admin:
        for role in roles:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.parametrize("roles", ["one-role", "two-roles"])
def test_frozen_worker_of_an_unprivileged_role_cannot_block_the_recovery(
    engine: Engine, db_url: str, children: ChildProcesses, tmp_path: Path, roles: str
) -> None:
    """As in production: not a superuser. With one role the recovery may end the frozen
    worker's session; with two roles it may not (no pg_signal_backend), and the frozen
    worker's idle-in-transaction timeout (3 s here) must release its locks instead."""
    with engine.begin() as conn:
        conn.execute(text(RECEIVER_DDL))
    made = [_make_role(db_url)]
    if roles == "two-roles":
        made.append(_make_role(db_url))
    url_a = make_url(db_url).set(username=made[0]).render_as_string(hide_password=False)
    url_b = make_url(db_url).set(username=made[-1]).render_as_string(hide_password=False)
    root = f"role-{uuid.uuid4().hex[:8]}"
    common = ["--root", root, "--step", STEP, "--rows", str(ROWS), "--batch", str(BATCH)]
    common += ["--heartbeat", "0.2", "--idle-timeout", "3"]
    child = [sys.executable, "-m", "orbit_pipelines_tests.execution.fenced_child"]
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    try:
        a_args = [*child, url_a, str(tmp_path), *common, "--run-id", "run-A", "--sleep", "0.05"]
        a_args += ["--pause-at", "12", "--pause-when", "after"]
        a = children.start(a_args, log_path=a_log)
        wait_for(
            lambda: _state(a.pid) == "T" or a.poll() is not None,
            timeout_s=60,
            interval_s=0.02,
            what="A to freeze itself",
        )
        assert a.poll() is None, a_log.read_text()[-3000:]
        started = time.monotonic()
        b = children.start(
            [*child, url_b, str(tmp_path), *common, "--run-id", "run-B"], log_path=b_log
        )
        try:
            b_rc = b.wait(timeout=60)
        except Exception:
            pytest.fail(f"B blocked by the frozen A ({roles}): {b_log.read_text()[-2000:]}")
        b_took = time.monotonic() - started
        assert b_rc == 0, b_log.read_text()[-3000:]
        os.killpg(a.pid, signal.SIGCONT)
        a_rc = a.wait(timeout=60)
        a_out = a_log.read_text()
        after = _snapshot(engine, root)
    finally:
        children.stop_all()
        _drop_roles(db_url, made)
    print(f"{roles}: B finished in {b_took:.1f}s while A was frozen")
    assert a_rc != 0 and "E-4009" in a_out, (a_rc, a_out[-2000:])
    assert [(r[0], r[1], r[2]) for r in after["rows"]] == sorted(
        (str(i), "done", 1) for i in range(ROWS)
    )
    assert sorted(r[0] for r in after["receiver"]) == list(range(ROWS))
    assert [(x[0], x[1]) for x in after["aggs"]] == [("sum", sum(range(ROWS)))]
