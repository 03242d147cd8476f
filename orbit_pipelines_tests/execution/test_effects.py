"""once(): the three receivers, in-doubt effects held until reconcile or a person."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from orbit_pipelines.execution import Reconciled, RowContext, StepFailed
from orbit_pipelines.store.effect_ledger import effects_in_doubt, resolve_effect
from orbit_pipelines.store.row_ledger import row_problems
from orbit_pipelines_tests.execution.helpers import Crash, executor

ROWS = [{"id": i} for i in range(3)]


def test_transactional_effect_commits_with_its_batch(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE public.mail (row_id int PRIMARY KEY)"))

    def handler(crash: bool) -> Any:
        def send(row: dict[str, Any], ctx: RowContext) -> None:
            def insert(conn: psycopg.Connection) -> None:
                conn.execute("INSERT INTO public.mail (row_id) VALUES (%s)", (row["id"],))

            ctx.once(f"mail-{row['id']}", insert, receiver="transactional")
            if crash and row["id"] == 2:
                raise Crash  # dies after the effect ran, before the batch committed

        return send

    with pytest.raises(Crash), executor(engine, batch_size=10) as ex:
        ex.run(ROWS, key="id", handler=handler(True))
    with engine.connect() as conn:
        # The whole batch rolled back: effects of rows 0..2 are gone with their statuses.
        assert conn.execute(text("SELECT count(*) FROM public.mail")).scalar() == 0

    with executor(engine, run_id="run-2", batch_size=10) as ex:
        ex.run(ROWS, key="id", handler=handler(False))
    with executor(engine, run_id="run-3", batch_size=10) as ex:
        again = ex.run(ROWS, key="id", handler=handler(False))
    assert again.skipped_already_done == 3
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM public.mail")).scalar() == 3


def test_idempotent_effect_is_retried_with_the_same_key_after_a_crash(engine: Engine) -> None:
    requests: list[str] = []

    def handler(crash: bool) -> Any:
        def handle(row: dict[str, Any], ctx: RowContext) -> None:
            def call(key: str) -> dict[str, str]:
                requests.append(key)
                if crash and row["id"] == 1:
                    raise Crash  # the request went out; the process died before recording it
                return {"receipt": key}

            ctx.emit(ctx.once(f"charge-{row['id']}", call, receiver="idempotent"))

        return handle

    with pytest.raises(Crash), executor(engine) as ex:
        ex.run(ROWS, key="id", handler=handler(True))
    with executor(engine, run_id="run-2") as ex:
        summary = ex.run(ROWS, key="id", handler=handler(False))
    assert summary.done == 2
    # Row 1's request was repeated with the same key (the receiver dedupes it).
    assert requests == [
        "root-1/step/charge-0",
        "root-1/step/charge-1",
        "root-1/step/charge-1",
        "root-1/step/charge-2",
    ]


def unsafe_handler(sent: list[int], *, crash_on: int | None = None, reconcile: Any = None) -> Any:
    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        def send() -> str:
            sent.append(row["id"])
            if row["id"] == crash_on:
                raise Crash
            return "sent"

        ctx.once(f"sms-{row['id']}", send, receiver="unsafe", reconcile=reconcile)

    return handle


def test_unsafe_effect_in_doubt_is_held_shown_and_released_by_a_person(engine: Engine) -> None:
    sent: list[int] = []
    with pytest.raises(Crash), executor(engine) as ex:
        ex.run(ROWS, key="id", handler=unsafe_handler(sent, crash_on=1))
    assert sent == [0, 1]

    for attempt in (2, 3):  # held on every rerun, never sent again blindly
        with (
            pytest.raises(StepFailed, match=r"^E-4002 1 row\(s\) held") as raised,
            executor(engine, run_id=f"run-{attempt}") as ex,
        ):
            ex.run(ROWS, key="id", handler=unsafe_handler(sent))
        assert raised.value.summary.held == 1 and raised.value.summary.done in (1, 0)
    assert sent == [0, 1, 2]
    with engine.connect() as conn:
        (doubt,) = effects_in_doubt(conn, "root-1")
        assert doubt.effect_key == "root-1/step/sms-1" and doubt.row_key == "1"
        (held,) = row_problems(conn, "root-1", "step")
        assert (held.row_key, held.status, held.error_code) == ("1", "failed", "E-4002")

    with engine.begin() as conn:  # a person checked the SMS gateway: it was delivered
        assert resolve_effect(conn, "root-1/step/sms-1", "succeeded", result="sent")
    with executor(engine, run_id="run-4") as ex:
        summary = ex.run(ROWS, key="id", handler=unsafe_handler(sent))
    assert summary.done == 1 and summary.skipped_already_done == 2
    assert sent == [0, 1, 2], "the resolved effect was not sent again"
    with engine.connect() as conn:
        assert effects_in_doubt(conn, "root-1") == []


def test_reconcile_callback_settles_in_doubt_keys(engine: Engine) -> None:
    sent: list[int] = []
    with pytest.raises(Crash), executor(engine) as ex:
        ex.run(ROWS, key="id", handler=unsafe_handler(sent, crash_on=1))
    asked: list[str] = []

    def not_delivered(key: str) -> Reconciled:
        asked.append(key)
        return Reconciled.failed()  # the gateway has no record: safe to send now

    with executor(engine, run_id="run-2") as ex:
        summary = ex.run(ROWS, key="id", handler=unsafe_handler(sent, reconcile=not_delivered))
    assert asked == ["sms-1"]
    assert summary.done == 2 and summary.held == 0
    assert sent == [0, 1, 1, 2]


def test_transactional_effect_returning_its_cursor_records_no_result(engine: Engine) -> None:
    """`lambda conn: conn.execute("INSERT ...")` returns a cursor: the effect commits, its
    row is done and the replayed result is None (E-4008 would fail a correct one-liner)."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE cursor_receiver (k text)"))

    def handler(row: dict[str, Any], ctx: Any) -> None:
        ctx.once(
            f"w{row['id']}",
            lambda c: c.execute("INSERT INTO cursor_receiver VALUES (%s)", (str(row["id"]),)),
            receiver="transactional",
        )

    with executor(engine, batch_size=10, on_error="quarantine") as ex:
        summary = ex.run([{"id": 1}, {"id": 2}], key="id", handler=handler)
    assert (summary.done, summary.quarantined) == (2, 0)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM cursor_receiver")).scalar() == 2
