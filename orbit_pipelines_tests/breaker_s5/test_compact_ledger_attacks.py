"""Breaker attacks on the compact row ledger (a54cce1 / df1556b: plain done rows as one
orbit.done_batches record per batch): over several attempts with failures, quarantined
rows, results, forks, duplicate and unjoinable keys, every key has exactly one outcome, and
the counts the CLI and metrics read equal the real number of rows per status."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import Engine, text

from orbit_pipelines.execution import RowContext, StepFailed
from orbit_pipelines.store.group_progress import row_counts_by_step
from orbit_pipelines.store.row_ledger import row_status_counts, status_counts
from orbit_pipelines_tests.execution.helpers import executor

KEYS: list[Any] = [
    *range(30),
    "a\x1fb",  # cannot be joined: its own step_rows record
    "\x1f",
    "x" * 3000,
    "k-é",
    (1, "a\x1fb"),  # a tuple whose display holds the separator
    b"\x1f\x00",
    5.0,  # a duplicate of 5
    "5",  # not a duplicate of 5
]


def _outcomes(engine: Engine, root: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            (str(h), s)
            for h, s in conn.execute(
                text("SELECT key_hash, status FROM orbit.row_outcomes WHERE root_run_id = :r"),
                {"r": root},
            ).all()
        ]


def _handler(fail_on: set[Any], attempt: list[int], poison: bool) -> Any:
    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        key = row["id"]
        if key in fail_on:
            raise RuntimeError(f"carrier down on {key!r}")
        if poison and type(key) is int and key % 7 == 3:
            raise ValueError("poison")  # quarantined under on_error=quarantine
        if isinstance(key, int) and key % 5 == 1:
            ctx.emit({"k": key, "attempt": attempt[0]})
        if isinstance(key, int) and key % 9 == 2:
            for token in ctx.fork(2):
                with token:
                    ctx.emit({"token": token.no})

    return handle


@pytest.mark.parametrize("batch_size", [1, 4, 50])
def test_every_key_one_outcome_and_the_counts_are_the_rows_over_attempts(
    engine: Engine, batch_size: int
) -> None:
    root = uuid.uuid4().hex
    rows = [{"id": k} for k in KEYS]
    attempt = [1]
    # Attempt 1 stops at a failed row (fail_fast): rows before it are recorded.
    with (
        pytest.raises(StepFailed),
        executor(engine, root_run_id=root, run_id="r1", batch_size=batch_size) as ex,
    ):
        ex.run(rows, key="id", handler=_handler({17}, attempt, poison=False))
    # Attempt 2: row 17 (recorded failed) is retried in place (quarantined now, it is poison);
    # the rows after it are new, and those of them that are poison are quarantined.
    attempt[0] = 2
    with executor(
        engine, root_run_id=root, run_id="r2", batch_size=batch_size, on_error="quarantine"
    ) as ex:
        second = ex.run(rows, key="id", handler=_handler(set(), attempt, poison=True))
    attempt[0] = 3
    calls: list[Any] = []
    with executor(engine, root_run_id=root, run_id="r3", batch_size=batch_size) as ex:
        third = ex.run(rows, key="id", handler=lambda r, c: calls.append(r["id"]))
        done = ex.load_done()
    assert calls == []
    distinct = len(KEYS) - 1  # 5.0 is 5
    # 5.0 is 5, done by attempt 1: skipped, not a duplicate of this run.
    assert third.skipped_already_done == len(KEYS) and second.skipped_already_done == 18

    outcomes = _outcomes(engine, root)
    per_key = Counter(h for h, _ in outcomes)
    assert len(per_key) == distinct and set(per_key.values()) == {1}, per_key.most_common(3)
    real = Counter(s for _, s in outcomes)
    poison = sum(1 for k in KEYS if type(k) is int and k % 7 == 3 and k >= 17)
    assert real == {"done": distinct - poison, "quarantined": poison}
    with engine.connect() as conn:
        assert row_status_counts(conn, root, "step") == real
        assert status_counts(conn, [root]) == {(root, "step"): real}
        assert row_counts_by_step(conn, root) == {"step": real}
    assert len(done) == distinct


def test_a_run_of_duplicates_only_records_nothing_twice(engine: Engine) -> None:
    # The same keys three times over, in batches that straddle the repeats.
    root = uuid.uuid4().hex
    keys = [*range(10), *range(10), *(float(i) for i in range(10)), "0", "0"]
    with executor(engine, root_run_id=root, batch_size=7) as ex:
        summary = ex.run([{"id": k} for k in keys], key="id", handler=lambda r, c: None)
    assert (summary.done, summary.duplicates) == (11, len(keys) - 11)
    outcomes = _outcomes(engine, root)
    assert len(outcomes) == 11 == len(set(outcomes))
    with engine.connect() as conn:
        assert row_status_counts(conn, root, "step") == {"done": 11}
