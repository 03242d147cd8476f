"""Sink batches: statuses, attempt numbers, same members on retry."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from orbit_pipelines.execution import StepFailed
from orbit_pipelines.execution.batch_runner import BatchInfo, run_batches
from orbit_pipelines.store.batches import batch_attempts
from orbit_pipelines_tests.execution.helpers import Crash, executor

ROWS = [{"id": f"o{i}"} for i in range(10)]


def test_batch_interrupted_while_executing_is_retried_as_a_new_attempt_same_members(
    engine: Engine,
) -> None:
    written: list[tuple[int, int, list[str]]] = []

    def sink(crash_on: int | None) -> Any:
        def write(rows: list[dict[str, Any]], batch: BatchInfo) -> None:
            written.append((batch.batch_no, batch.attempt, [r["id"] for r in rows]))
            if batch.batch_no == crash_on:
                raise Crash

        return write

    with pytest.raises(Crash), executor(engine) as ex:
        run_batches(ex, ROWS, key="id", sink=sink(crash_on=2), batch_size=4)
    with engine.connect() as conn:
        attempts = batch_attempts(conn, "root-1", "step")
    assert [(a.batch_no, a.attempt, a.status) for a in attempts] == [
        (1, 1, "completed"),
        (2, 1, "executing"),
    ]

    written.clear()
    with executor(engine, run_id="run-2") as ex:
        summary = run_batches(ex, ROWS, key="id", sink=sink(crash_on=None), batch_size=4)
    assert written == [
        (2, 2, ["o4", "o5", "o6", "o7"]),  # same members as attempt 1
        (3, 1, ["o8", "o9"]),
    ]
    assert (summary.done, summary.skipped_already_done) == (6, 4)
    with engine.connect() as conn:
        attempts = batch_attempts(conn, "root-1", "step")
    assert [(a.batch_no, a.attempt, a.status) for a in attempts] == [
        (1, 1, "completed"),
        (2, 1, "executing"),
        (2, 2, "completed"),
        (3, 1, "completed"),
    ]


def test_failed_batch_fails_the_step_and_is_retried_next_run(engine: Engine) -> None:
    written: list[tuple[int, int, list[str]]] = []

    def flaky(rows: list[dict[str, Any]], batch: BatchInfo) -> None:
        written.append((batch.batch_no, batch.attempt, [r["id"] for r in rows]))
        if batch.batch_no == 1 and batch.attempt == 1:
            raise ConnectionError("warehouse went away")

    with (
        pytest.raises(StepFailed, match=r"^E-4004 batch 1 attempt 1: ConnectionError"),
        executor(engine) as ex,
    ):
        run_batches(ex, ROWS, key="id", sink=flaky, batch_size=5)
    with executor(engine, run_id="run-2") as ex:
        run_batches(ex, ROWS, key="id", sink=flaky, batch_size=5)
    assert written == [
        (1, 1, ["o0", "o1", "o2", "o3", "o4"]),
        (1, 2, ["o0", "o1", "o2", "o3", "o4"]),
        (2, 1, ["o5", "o6", "o7", "o8", "o9"]),
    ]
    with engine.connect() as conn:
        statuses = [
            (a.batch_no, a.attempt, a.status) for a in batch_attempts(conn, "root-1", "step")
        ]
    assert statuses == [(1, 1, "failed"), (1, 2, "completed"), (2, 1, "completed")]
