"""`last_done_row_in_order`: the last row completed in input order, although a whole batch
shares one commit time (the bug: "Last completed: row c00962" with c00000-c00999 done)."""

from __future__ import annotations

from sqlalchemy import Engine

from orbit_pipelines.execution import RowContext
from orbit_pipelines.store.group_progress import last_done_row_in_order, row_counts_by_step
from orbit_pipelines_tests.execution.helpers import executor


def test_the_last_row_of_the_last_batch_in_input_order(engine: Engine) -> None:
    rows = [{"id": f"c{n:05d}"} for n in range(1000)]

    def handle(row: dict[str, str], ctx: RowContext) -> None:
        return None

    with executor(engine, batch_size=250) as ex:
        ex.run(rows, key="id", handler=handle)
    with engine.connect() as conn:
        last = last_done_row_in_order(conn, "root-1", "step")
        counts = row_counts_by_step(conn, "root-1")
    assert last is not None and last.row_key == "c00999"
    assert counts == {"step": {"done": 1000}}


def test_the_last_row_whose_effect_was_recorded_shows_its_result(engine: Engine) -> None:
    rows = [{"id": f"o{n}"} for n in (5, 3, 9, 1)]  # input order is not key order

    def handle(row: dict[str, str], ctx: RowContext) -> None:
        ctx.once(f"ship:{row['id']}", lambda _key: {"tracking_number": f"1Z{row['id']}"})

    with executor(engine, batch_size=10) as ex:
        ex.run(rows, key="id", handler=handle)
    with engine.connect() as conn:
        last = last_done_row_in_order(conn, "root-1", "step")
    assert last is not None and last.row_key == "o1"
    assert last.result == {"tracking_number": "1Zo1"}
