"""Resume is a set question: the two cases a sequence-number checkpoint gets wrong."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from orbit_pipelines.execution import RowContext, Sum
from orbit_pipelines.store.row_ledger import row_status_counts
from orbit_pipelines_tests.execution.helpers import Crash, executor

ROWS = [{"id": f"r{i}", "n": i} for i in range(5)]


def test_fork_into_three_tokens_then_crash_resumes_rows_1_to_4(engine: Engine) -> None:
    calls: list[str] = []

    def first_run(row: dict[str, Any], ctx: RowContext) -> None:
        calls.append(row["id"])
        if row["n"] == 0:
            for token in ctx.fork(["line-a", "line-b", "line-c"]):
                with token:
                    token.emit({"line": token.item})
            return
        raise Crash  # the process dies after row 0's three tokens finished and committed

    with pytest.raises(Crash), executor(engine) as ex:
        ex.run(ROWS, key="id", handler=first_run)
    assert calls == ["r0", "r1"]

    calls.clear()

    def resumed(row: dict[str, Any], ctx: RowContext) -> None:
        calls.append(row["id"])

    with executor(engine, run_id="run-2") as ex:
        summary = ex.run(ROWS, key="id", handler=resumed)
    # A checkpoint "sequence number 3" (three tokens) would have skipped rows 1 and 2.
    assert calls == ["r1", "r2", "r3", "r4"]
    assert (summary.done, summary.skipped_already_done) == (4, 1)
    with engine.connect() as conn:
        assert row_status_counts(conn, "root-1", "step") == {"done": 5}


def test_row_fails_before_its_checkpoint_is_rerun_exactly_once(engine: Engine) -> None:
    calls: list[str] = []

    def first_run(row: dict[str, Any], ctx: RowContext) -> None:
        calls.append(row["id"])
        ctx.agg["sum"].add(row["n"])
        if row["n"] == 2:
            raise Crash  # dies inside row 2, before its batch commits

    with pytest.raises(Crash), executor(engine) as ex:
        ex.run(ROWS, key="id", handler=first_run, aggregations={"sum": Sum()})

    calls.clear()

    def resumed(row: dict[str, Any], ctx: RowContext) -> None:
        calls.append(row["id"])
        ctx.agg["sum"].add(row["n"])

    with executor(engine, run_id="run-2") as ex:
        summary = ex.run(ROWS, key="id", handler=resumed, aggregations={"sum": Sum()})
    assert calls == ["r2", "r3", "r4"]
    # The restored state counted rows 0 and 1 once; the resumed run added 2..4 once.
    assert summary.aggregations == {"sum": 0 + 1 + 2 + 3 + 4}


def test_a_forked_row_with_an_unfinished_token_resumes_only_that_token(engine: Engine) -> None:
    tokens_run: list[int] = []

    def first_run(row: dict[str, Any], ctx: RowContext) -> None:
        if row["n"] != 0:
            return
        for token in ctx.fork(3):
            with token:
                if token.no == 1:
                    raise ValueError("carrier said no")
                tokens_run.append(token.no)
                ctx.agg["lines"].add(1)

    with (
        pytest.raises(Exception, match="E-4004 row r0: ValueError: carrier said no"),
        executor(engine) as ex,
    ):
        ex.run(ROWS, key="id", handler=first_run, aggregations={"lines": Sum()})
    assert tokens_run == [0]

    tokens_run.clear()

    def resumed(row: dict[str, Any], ctx: RowContext) -> None:
        if row["n"] != 0:
            return
        for token in ctx.fork(3):
            with token:
                tokens_run.append(token.no)
                ctx.agg["lines"].add(1)

    with executor(engine, run_id="run-2") as ex:
        summary = ex.run(ROWS, key="id", handler=resumed, aggregations={"lines": Sum()})
    # Token 0 finished in the first run; 1 and 2 run now, and the count has each line once.
    assert tokens_run == [1, 2]
    assert summary.aggregations == {"lines": 3}
    assert summary.done == 5
