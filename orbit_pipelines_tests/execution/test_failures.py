"""fail_fast vs quarantine, error codes on the step failure, counts, progress, heartbeats."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine

from orbit_pipelines.errors import E1003_INVALID_VALUE, E3001_SERVICE_TIMEOUT, OrbitError
from orbit_pipelines.execution import ProgressEvent, RowContext, RowExecutor, RunScope, StepFailed
from orbit_pipelines.execution.scope import ExecutorOptions
from orbit_pipelines.store.heartbeats import heartbeats_for_group
from orbit_pipelines.store.row_ledger import row_problems, row_status_counts
from orbit_pipelines_tests.execution.helpers import executor

ROWS = [{"id": i, "amount": i * 10} for i in range(10)]


def bad_input_on_3_and_7(row: dict[str, Any], ctx: RowContext) -> None:
    if row["id"] in (3, 7):
        raise OrbitError(E1003_INVALID_VALUE, f"amount {row['amount']} is not allowed")
    ctx.emit({"charged": row["amount"]})


def test_quarantine_sets_rows_aside_with_reason_and_goes_on(engine: Engine) -> None:
    with executor(engine, on_error="quarantine", batch_size=4) as ex:
        summary = ex.run(ROWS, key="id", handler=bad_input_on_3_and_7)
    assert (summary.done, summary.quarantined, summary.failed) == (8, 2, 0)
    assert summary.as_metadata()["rows_quarantined"] == 2
    with engine.connect() as conn:
        problems = row_problems(conn, "root-1", "step")
    assert [(p.row_key, p.status, p.error_code) for p in problems] == [
        ("3", "quarantined", "E-1003"),
        ("7", "quarantined", "E-1003"),
    ]
    assert problems[0].error_message == "amount 30 is not allowed"

    # A rerun treats quarantined rows as settled: nothing runs again.
    with executor(engine, run_id="run-2", on_error="quarantine") as ex:
        again = ex.run(ROWS, key="id", handler=bad_input_on_3_and_7)
    assert (again.done, again.skipped_already_done) == (0, 10)


def test_fail_fast_stops_at_the_first_bad_row_with_its_code(engine: Engine) -> None:
    with pytest.raises(StepFailed) as raised, executor(engine, batch_size=4) as ex:
        ex.run(ROWS, key="id", handler=bad_input_on_3_and_7)
    assert raised.value.code == "E-1003"
    assert str(raised.value).startswith("E-1003 row 3: amount 30 is not allowed")
    assert (raised.value.summary.done, raised.value.summary.failed) == (3, 1)
    with engine.connect() as conn:
        # Rows 0..2 and the failure are committed; rows after 3 never ran.
        assert row_status_counts(conn, "root-1", "step") == {"done": 3, "failed": 1}


def test_quarantine_mode_still_fails_the_step_on_a_retryable_external_error(
    engine: Engine,
) -> None:
    def timeout_on_5(row: dict[str, Any], ctx: RowContext) -> None:
        if row["id"] == 5:
            raise OrbitError(E3001_SERVICE_TIMEOUT, "carrier timeout after 30s")

    with (
        pytest.raises(StepFailed, match=r"^E-3001 row 5: carrier timeout"),
        executor(engine, on_error="quarantine") as ex,
    ):
        ex.run(ROWS, key="id", handler=timeout_on_5)
    calls: list[int] = []
    with executor(engine, run_id="run-2", on_error="quarantine") as ex:
        ex.run(ROWS, key="id", handler=lambda row, ctx: calls.append(row["id"]))
    assert calls == [5, 6, 7, 8, 9]


def test_progress_events_every_few_percent_and_a_dataframe_input(engine: Engine) -> None:
    frame = pd.DataFrame({"id": range(1000), "amount": range(1000)})
    events: list[ProgressEvent] = []
    options = ExecutorOptions(batch_size=50, on_error="quarantine", progress_every_pct=10)
    scope = RunScope("root-1", "run-1", "step")
    with RowExecutor(engine, scope, options, progress=events.append) as ex:
        summary = ex.run(
            frame,
            key="id",
            handler=lambda row, ctx: bad_input_on_3_and_7(row, ctx) if row["id"] < 10 else None,
        )
    assert summary.done == 998 and summary.rows_total == 1000
    assert [e.rows_seen for e in events] == [100 * k for k in range(1, 11)] + [1000]
    assert events[-1].final
    assert events[4].describe() == "row 500/1,000 (50%), 2 quarantined"


def test_heartbeat_moves_while_a_slow_row_runs(engine: Engine) -> None:
    beats: list[Any] = []

    def slow(row: dict[str, Any], ctx: RowContext) -> None:
        if row["id"] == 1:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    beats.extend(heartbeats_for_group(conn, "root-1"))
                time.sleep(0.1)

    with executor(engine) as ex:  # beats every 0.2 s
        ex.run(ROWS[:3], key="id", handler=slow)
    during = [b for b in beats if b.step_key == "step"]
    assert len({b.beat_at for b in during}) >= 3, "the thread kept beating during the slow row"
    assert {b.rows_done for b in during} == {1}, "row 0 committed; row 1 not yet"
    assert len({b.progress_at for b in during}) == 1, "no progress while the row is slow"
    with engine.connect() as conn:
        (final,) = heartbeats_for_group(conn, "root-1")
    assert final.rows_done == 3 and final.rows_total == 3
