"""Issue 12, item 7: a transactional effect, its ledger entry and its row commit together.

One transaction per batch, not one per effect: after a SIGKILL mid-batch no effect of a
row that is not done is at the receiver, and a batch of N transactional effects costs one
commit (counted twice: distinct transaction ids at the receiver, and the database's own
``xact_commit`` counter).
"""

from __future__ import annotations

import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from orbit_pipelines.execution import ExecutorOptions, RowContext, RowExecutor, RunScope
from orbit_pipelines_tests.execution.fenced_child import RECEIVER_DDL
from orbit_pipelines_tests.processes import ChildProcesses

ROWS = 200
BATCH = 50


def _done_rows(engine: Engine, root: str) -> set[int]:
    with engine.connect() as conn:
        keys = conn.execute(
            text(
                "SELECT row_key FROM orbit.row_outcomes WHERE root_run_id = :r AND status = 'done'"
            ),
            {"r": root},
        ).scalars()
        return {int(k) for k in keys}


def _delivered(engine: Engine, root: str) -> dict[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT row_id, count(*) FROM public.fx_receiver WHERE root = :r GROUP BY 1"),
            {"r": root},
        ).all()
    return {int(r): int(n) for r, n in rows}


def test_sigkill_mid_batch_leaves_no_effect_of_a_row_not_done(
    engine: Engine, db_url: str, children: ChildProcesses, tmp_path: Path
) -> None:
    with engine.begin() as conn:
        conn.execute(text(RECEIVER_DDL))
    root = f"onetx-{uuid.uuid4().hex[:8]}"
    args = [sys.executable, "-m", "orbit_pipelines_tests.execution.fenced_child", db_url]
    args += [str(tmp_path), "--root", root, "--rows", str(ROWS), "--batch", str(BATCH)]
    log = tmp_path / "child.log"

    # Row 125 is in the middle of the third batch (100..149): 26 effects ran in it.
    killed = children.start([*args, "--run-id", "run-1", "--kill-at", "125"], log_path=log)
    assert killed.wait(timeout=120) == -signal.SIGKILL, log.read_text()[-2000:]
    done = _done_rows(engine, root)
    assert done == set(range(100)), sorted(set(range(ROWS)) ^ done)[:10]
    orphans = sorted(set(_delivered(engine, root)) - done)
    assert orphans == [], f"{len(orphans)} effects committed for rows not done: {orphans[:10]}..."

    again = children.start([*args, "--run-id", "run-2"], log_path=log)
    assert again.wait(timeout=120) == 0, log.read_text()[-2000:]
    assert _delivered(engine, root) == dict.fromkeys(range(ROWS), 1)


def _xact_commit(url: str) -> int:
    with psycopg.connect(url, autocommit=True, application_name="xact-probe") as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _settled_xact_commit(engine: Engine, url: str) -> int:
    # Other backends report their counts when idle for a second or when they exit: close
    # every pooled connection and give the stats a moment.
    engine.dispose()
    time.sleep(1.2)
    return _xact_commit(url)


def test_a_batch_of_transactional_effects_costs_one_commit(engine: Engine, db_url: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(RECEIVER_DDL))
    root = f"onetx-{uuid.uuid4().hex[:8]}"

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        def deliver(conn: psycopg.Connection) -> None:
            conn.execute(
                "INSERT INTO public.fx_receiver (root, row_id, run_id) VALUES (%s, %s, 'run-1')",
                (root, row["id"]),
            )

        ctx.once(f"fx-{row['id']}", deliver, receiver="transactional")

    options = ExecutorOptions(batch_size=BATCH, on_error="fail_fast", heartbeat_every_s=3600)
    before = _settled_xact_commit(engine, db_url)
    with RowExecutor(engine, RunScope(root, "run-1", "step"), options) as ex:
        summary = ex.run([{"id": i} for i in range(ROWS)], key="id", handler=handle)
    after = _settled_xact_commit(engine, db_url)
    batches = ROWS // BATCH
    assert summary.batches_committed == batches

    commits = after - before
    print(f"{ROWS} transactional effects in {batches} batches: {commits} commits in the database")
    with engine.connect() as conn:
        txids = conn.execute(
            text(
                "SELECT row_id / :b AS batch, count(DISTINCT txid) FROM public.fx_receiver "
                "WHERE root = :r GROUP BY 1 ORDER BY 1"
            ),
            {"b": BATCH, "r": root},
        ).all()
    assert [tuple(t) for t in txids] == [(b, 1) for b in range(batches)], (
        f"transactions per batch of {BATCH} effects: {txids}"
    )
    # Each batch one commit; a little room for the step's own bookkeeping (fence claim,
    # loading the done set, the probes' own reads). One commit per effect would be >= 200.
    assert commits <= batches + 15, f"{commits} commits for {batches} batches"


def _raises_after_write(conn: psycopg.Connection, row_id: int) -> None:
    if row_id == 2:
        raise ValueError("the receiver said no")


def _unique_violation(conn: psycopg.Connection, row_id: int) -> None:
    if row_id == 2:
        conn.execute("INSERT INTO public.fx_unique VALUES (1), (1)")


def _commits_itself(conn: psycopg.Connection, row_id: int) -> None:
    if row_id == 2:
        conn.commit()  # would commit the batch so far, half a batch, if it were allowed


def _rolls_back_itself(conn: psycopg.Connection, row_id: int) -> None:
    if row_id == 2:
        conn.rollback()  # would drop the rows before it in the batch, if it were allowed


@pytest.mark.parametrize(
    "misbehave", [_raises_after_write, _unique_violation, _commits_itself, _rolls_back_itself]
)
def test_a_failing_transactional_effect_leaves_nothing_and_the_batch_commits(
    engine: Engine, misbehave: Any
) -> None:
    """Guard (passes since 22c1cb5): the effect's own writes go with its row, the others stay."""
    with engine.begin() as conn:
        conn.execute(text(RECEIVER_DDL))
        conn.execute(text("CREATE TABLE public.fx_unique (id int PRIMARY KEY)"))
    root = f"onetx-{uuid.uuid4().hex[:8]}"

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        def deliver(conn: psycopg.Connection) -> None:
            conn.execute(
                "INSERT INTO public.fx_receiver (root, row_id, run_id) VALUES (%s, %s, 'run-1')",
                (root, row["id"]),
            )
            misbehave(conn, row["id"])

        ctx.once(f"fx-{row['id']}", deliver, receiver="transactional")

    options = ExecutorOptions(batch_size=10, on_error="quarantine", heartbeat_every_s=1.0)
    with RowExecutor(engine, RunScope(root, "run-1", "step"), options) as ex:
        summary = ex.run([{"id": i} for i in range(5)], key="id", handler=handle)
    assert (summary.done, summary.quarantined) == (4, 1), summary
    assert _done_rows(engine, root) == {0, 1, 3, 4}
    assert _delivered(engine, root) == dict.fromkeys([0, 1, 3, 4], 1)
