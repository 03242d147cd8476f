"""The compact row ledger: plain done rows go into one done_batches record per committed
batch; rows that are not simply done, or that an earlier attempt recorded, keep their own
step_rows record; the row_outcomes view shows both as rows."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

from orbit_pipelines.execution import RowContext, StepFailed
from orbit_pipelines.store.row_ledger import row_status_counts
from orbit_pipelines_tests.execution.helpers import executor


def _records(engine: Engine) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        batches = conn.execute(
            text(
                "SELECT row_count, row_keys, results, octet_length(key_hashes)"
                " FROM orbit.done_batches ORDER BY batch_seq"
            )
        ).all()
        per_row = conn.execute(
            text("SELECT row_key, status, attempt FROM orbit.step_rows ORDER BY row_key")
        ).all()
    return [tuple(b) for b in batches], [tuple(r) for r in per_row]


def test_done_rows_are_one_record_per_batch_and_the_rest_per_row(engine: Engine) -> None:
    rows = [{"id": f"k{n}"} for n in range(7)]

    def handle(row: dict[str, str], ctx: RowContext) -> None:
        if row["id"] == "k2":
            raise ValueError("bad row")
        if row["id"] == "k5":
            ctx.emit({"total": 5})

    with executor(engine, batch_size=4, on_error="quarantine") as ex:
        summary = ex.run(rows, key="id", handler=handle)
    assert (summary.done, summary.quarantined) == (6, 1)
    batches, per_row = _records(engine)
    assert batches == [
        (3, "k0\x1fk1\x1fk3", None, 48),
        (3, "k4\x1fk5\x1fk6", [None, {"total": 5}, None], 48),
    ]
    assert per_row == [("k2", "quarantined", 1)]
    with engine.connect() as conn:
        assert row_status_counts(conn, "root-1", "step") == {"done": 6, "quarantined": 1}
        shown = conn.execute(
            text("SELECT row_key, status, result FROM orbit.row_outcomes ORDER BY row_key")
        ).all()
    assert [tuple(r) for r in shown] == [
        ("k0", "done", None),
        ("k1", "done", None),
        ("k2", "quarantined", None),
        ("k3", "done", None),
        ("k4", "done", None),
        ("k5", "done", {"total": 5}),
        ("k6", "done", None),
    ]


def test_a_row_that_failed_before_is_updated_in_place_when_done(engine: Engine) -> None:
    rows = [{"id": n} for n in range(4)]

    def fail_on_2(row: dict[str, int], ctx: RowContext) -> None:
        if row["id"] == 2:
            raise RuntimeError("carrier down")

    with pytest.raises(StepFailed), executor(engine, batch_size=10) as ex:
        ex.run(rows, key="id", handler=fail_on_2)
    calls: list[int] = []
    with executor(engine, run_id="run-2", batch_size=10) as ex:
        summary = ex.run(rows, key="id", handler=lambda row, ctx: calls.append(row["id"]))
    assert calls == [2, 3]
    assert (summary.done, summary.skipped_already_done) == (2, 2)
    batches, per_row = _records(engine)
    # Row 2 keeps its one record (now done, second attempt); no second record for it.
    assert per_row == [("2", "done", 2)]
    assert [(n, keys) for n, keys, _, _ in batches] == [(2, "0\x1f1"), (1, "3")]


def test_a_key_the_record_cannot_join_gets_its_own_record(engine: Engine) -> None:
    # The unit separator inside a key would split it in the joined keys of the record.
    rows = [{"id": "x"}, {"id": "a\x1fb"}, {"id": "y"}]
    with executor(engine, batch_size=10) as ex:
        summary = ex.run(rows, key="id", handler=lambda row, ctx: None)
    assert summary.done == 3
    batches, per_row = _records(engine)
    assert [(n, keys) for n, keys, _, _ in batches] == [(2, "x\x1fy")]
    assert [status for _, status, _ in per_row] == ["done"]
    # Resumed, none of the three runs again: the odd key's digest is read from step_rows.
    calls: list[Any] = []
    with executor(engine, run_id="run-2", batch_size=10) as ex:
        again = ex.run(rows, key="id", handler=lambda row, ctx: calls.append(row))
    assert calls == [] and again.skipped_already_done == 3
