"""Issue 12, items 2-6 and 8: the edges a real deployment meets first, one test each.

Each test is the issue's own reproduction against a real Postgres. Codes come from the
issue 12 contract: E-1013 missing key, E-1014 unusable key, E-1015 unrecordable value,
E-2008 bad option, E-4007 effect key of another row, E-4008 unrecordable effect result.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, text

from orbit_pipelines.errors import OrbitError, is_retryable
from orbit_pipelines.execution import (
    ExecutorOptions,
    RowContext,
    RowExecutor,
    RunScope,
    StepFailed,
    Sum,
)
from orbit_pipelines.execution.scope import OnError
from orbit_pipelines.store import value_codec
from orbit_pipelines.store.effect_ledger import digest
from orbit_pipelines_tests.execution.helpers import Crash


def _executor(
    engine: Engine,
    root: str,
    *,
    run_id: str = "run-1",
    batch_size: int = 10,
    on_error: OnError = "quarantine",
) -> RowExecutor:
    return RowExecutor(
        engine,
        RunScope(root_run_id=root, run_id=run_id, step_key="step"),
        ExecutorOptions(batch_size=batch_size, on_error=on_error, heartbeat_every_s=0.5),
    )


def _ledger(engine: Engine, root: str) -> list[tuple[str, str, str | None, str | None]]:
    """(row_key, status, error_code, error_message) of every ledger row of the step."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT row_key, status, error_code, error_message FROM orbit.row_outcomes "
                "WHERE root_run_id = :root AND step_key = 'step' ORDER BY status, row_key"
            ),
            {"root": root},
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _by_status(engine: Engine, root: str) -> dict[str, list[tuple[str, str | None]]]:
    out: dict[str, list[tuple[str, str | None]]] = {}
    for row_key, status, code, _ in _ledger(engine, root):
        out.setdefault(status, []).append((row_key, code))
    return out


def _root() -> str:
    return f"edge-{uuid.uuid4().hex[:10]}"


# -- item 2: row keys --------------------------------------------------------------------------


def test_none_key_is_missing_and_does_not_collide_with_the_string_none(engine: Engine) -> None:
    root = _root()
    seen: list[Any] = []
    rows = [{"id": "None", "v": 1}, {"id": None, "v": 2}, {"id": "x", "v": 3}]
    with _executor(engine, root) as ex:
        summary = ex.run(rows, key="id", handler=lambda r, ctx: seen.append(r["id"]))
    assert seen == ["None", "x"], "the None-keyed row must not reach the handler"
    assert summary.duplicates == 0, f"None collided with 'None': {summary}"
    statuses = _by_status(engine, root)
    assert sorted(k for k, _ in statuses["done"]) == ["None", "x"]
    assert [code for _, code in statuses.get("quarantined", [])] == ["E-1013"], statuses


def test_int_one_and_string_one_are_two_keys(engine: Engine) -> None:
    root = _root()
    seen: list[Any] = []
    rows = [{"id": 1}, {"id": "1"}, {"id": 1.0}]  # 1.0 is the int 1 again: a duplicate
    with _executor(engine, root) as ex:
        summary = ex.run(rows, key="id", handler=lambda r, ctx: seen.append(r["id"]))
    assert seen == [1, "1"], f"handler saw {seen!r}"
    assert (summary.done, summary.duplicates) == (2, 1), summary
    with engine.connect() as conn:
        hashes = conn.execute(
            text("SELECT count(DISTINCT key_hash) FROM orbit.row_outcomes WHERE root_run_id = :r"),
            {"r": root},
        ).scalar()
    assert hashes == 2


@pytest.mark.parametrize("nan", [float("nan"), np.nan, np.float64("nan"), pd.NA, pd.NaT])
def test_nan_keys_are_missing_not_one_key(engine: Engine, nan: Any) -> None:
    root = _root()
    seen: list[Any] = []
    rows = [{"id": nan}, {"id": 2}, {"id": float("nan")}, {"id": 3}]
    with _executor(engine, root) as ex:
        summary = ex.run(rows, key="id", handler=lambda r, ctx: seen.append(r["id"]))
    assert seen == [2, 3]
    assert summary.duplicates == 0, "two NaN keys collapsed into one 'duplicate'"
    statuses = _by_status(engine, root)
    assert sorted(k for k, _ in statuses["done"]) == ["2", "3"]
    codes = [code for _, code in statuses.get("quarantined", [])]
    assert codes == ["E-1013", "E-1013"], statuses


def test_missing_key_stops_the_step_non_retryably_in_fail_fast(engine: Engine) -> None:
    root = _root()
    with pytest.raises(StepFailed) as raised, _executor(engine, root, on_error="fail_fast") as ex:
        ex.run([{"id": 1}, {"id": ""}, {"id": 3}], key="id", handler=lambda r, ctx: None)
    assert raised.value.code == "E-1013"
    assert not is_retryable(raised.value.code)


def test_dataframe_int_ids_with_a_gap_keep_their_int_keys_on_every_attempt(
    engine: Engine,
) -> None:
    root = _root()
    frame = pd.DataFrame({"id": [1, 2, None, 4], "amount": [10, 20, 30, 40]})
    assert frame["id"].dtype == np.float64  # what pandas does to an int column with a gap
    effect_keys: list[str] = []

    def charge(row: dict[str, Any], ctx: RowContext) -> None:
        effect_keys.append(ctx.row_key)
        ctx.once(f"charge:{ctx.row_key}", lambda key: "ok")

    with _executor(engine, root) as ex:
        first = ex.run(frame, key="id", handler=charge)
    assert effect_keys == ["1", "2", "4"], f"row keys seen by the handler: {effect_keys}"
    assert first.done == 3 and first.quarantined == 1
    statuses = _by_status(engine, root)
    assert sorted(k for k, _ in statuses["done"]) == ["1", "2", "4"]
    assert [c for _, c in statuses["quarantined"]] == ["E-1013"]

    # The same ids re-read as ints (the gap filled) are the same keys: only 3 is new.
    effect_keys.clear()
    again = [{"id": i, "amount": i * 10} for i in (1, 2, 3, 4)]
    with _executor(engine, root, run_id="run-2") as ex:
        second = ex.run(again, key="id", handler=charge)
    assert (second.done, second.skipped_already_done) == (1, 3)
    assert effect_keys == ["3"]
    with engine.connect() as conn:
        # A done effect keeps its key's digest, not its text.
        keys = conn.execute(
            text("SELECT key_hash, step_key FROM orbit.effect_records WHERE root_run_id = :r"),
            {"r": root},
        ).all()
        [step] = {s for _, s in keys}
        assert sorted(k for k, _ in keys) == sorted(
            digest(f"{root}/{step}/charge:{i}") for i in (1, 2, 3, 4)
        )


# -- item 3: duplicates across batches ---------------------------------------------------------


def test_duplicate_key_in_a_later_batch_is_not_handled_again(engine: Engine) -> None:
    rows = [
        {"id": "a", "v": 1},
        {"id": "a", "v": 10},
        {"id": "b", "v": 2},
        {"id": "c", "v": 3},
        {"id": "a", "v": 40},
    ]
    results = {}
    for batch_size in (1, 2, 3, 7, 100):
        calls: list[str] = []

        def handle(row: dict[str, Any], ctx: RowContext, calls: list[str] = calls) -> None:
            calls.append(row["id"])
            ctx.agg["sum"].add(row["v"])

        with _executor(engine, _root(), batch_size=batch_size) as ex:
            summary = ex.run(rows, key="id", handler=handle, aggregations={"sum": Sum()})
        results[batch_size] = (summary.aggregations["sum"], summary.duplicates, calls)
    expected = (6, 2, ["a", "b", "c"])
    assert results == dict.fromkeys((1, 2, 3, 7, 100), expected)


# -- item 4: options validated at construction -------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"batch_size": 0},
        {"batch_size": -1},
        {"batch_size": 2.5},
        {"heartbeat_every_s": 0},
        {"heartbeat_every_s": -1.0},
        {"on_error": "ignore"},
        {"progress_every_pct": 0},
        {"progress_every_rows": 0},
    ],
    ids=lambda bad: "-".join(f"{k}={v}" for k, v in bad.items()),
)
def test_bad_option_is_refused_at_construction_with_e2008(bad: dict[str, Any]) -> None:
    with pytest.raises(OrbitError) as raised:
        ExecutorOptions(**bad)
    assert raised.value.code == "E-2008"
    name = next(iter(bad))
    assert name in raised.value.message, raised.value.message


def test_good_options_still_construct() -> None:
    # Guards the test above against an over-eager validator.
    ExecutorOptions(batch_size=1, heartbeat_every_s=0.01, on_error="quarantine")
    ExecutorOptions(progress_every_pct=0.5, progress_every_rows=1)


# -- item 5: one effect key, two rows ----------------------------------------------------------


def test_effect_key_reused_by_other_rows_is_e4007_naming_both_rows(engine: Engine) -> None:
    root = _root()
    calls: list[str] = []

    def pay(row: dict[str, Any], ctx: RowContext) -> None:
        # Bug in the user's code: every row uses alice's key.
        result = ctx.once("charge-alice", lambda key: calls.append(row["name"]) or row["name"])
        ctx.emit({"paid": result})

    rows = [{"name": "alice"}, {"name": "bob"}, {"name": "carol"}]
    with _executor(engine, root) as ex:
        summary = ex.run(rows, key="name", handler=pay)
    assert calls == ["alice"]
    assert (summary.done, summary.quarantined) == (1, 2), summary
    ledger = {k: (status, code, msg) for k, status, code, msg in _ledger(engine, root)}
    assert ledger["alice"][:2] == ("done", None)
    for other in ("bob", "carol"):
        status, code, message = ledger[other]
        assert (status, code) == ("quarantined", "E-4007"), ledger[other]
        assert "alice" in (message or "") and other in (message or ""), message

    # fail_fast: bob stops the step, non-retryably.
    with (
        pytest.raises(StepFailed) as raised,
        _executor(engine, _root(), on_error="fail_fast") as ex,
    ):
        ex.run(rows, key="name", handler=pay)
    assert raised.value.code == "E-4007"
    assert "alice" in str(raised.value) and "bob" in str(raised.value)
    assert not is_retryable("E-4007")


def test_the_row_that_owns_an_effect_key_replays_it_after_a_crash(engine: Engine) -> None:
    # The owner check must not refuse the owner itself when its row is redone.
    root = _root()
    calls: list[str] = []

    def handler(crash: bool) -> Any:
        def pay(row: dict[str, Any], ctx: RowContext) -> None:
            ctx.emit(ctx.once(f"charge-{row['name']}", lambda key: calls.append(key) or "ok"))
            if crash and row["name"] == "bob":
                raise Crash

        return pay

    rows = [{"name": "alice"}, {"name": "bob"}]
    with pytest.raises(Crash), _executor(engine, root) as ex:
        ex.run(rows, key="name", handler=handler(True))
    with _executor(engine, root, run_id="run-2") as ex:
        summary = ex.run(rows, key="name", handler=handler(False))
    assert (summary.done, summary.quarantined) == (2, 0)
    assert len(calls) == 2


# -- item 6: effect results that are not JSON ------------------------------------------------


def test_rich_effect_results_replay_exactly_after_a_crash(engine: Engine) -> None:
    root = _root()
    original = {
        "amount": Decimal("9.99"),
        "at": datetime(2026, 12, 1, 10, 30, 0, 123456, tzinfo=UTC),
        "day": date(2026, 12, 1),
        "took": timedelta(seconds=1.5),
        "n": np.int64(7),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "raw": b"\x00\xff",
        "pair": (1, "x"),
        "tags": {1, 2},
        "f": np.float32(1.5),
    }
    calls: list[str] = []
    replayed: list[Any] = []

    def handler(crash: bool) -> Any:
        def pay(row: dict[str, Any], ctx: RowContext) -> None:
            replayed.append(ctx.once("pay", lambda key: calls.append(key) or dict(original)))
            if crash:
                raise Crash  # the effect succeeded and was recorded; the row was not

        return pay

    with pytest.raises(Crash), _executor(engine, root) as ex:
        ex.run([{"id": 1}], key="id", handler=handler(True))
    with _executor(engine, root, run_id="run-2") as ex:
        summary = ex.run([{"id": 1}], key="id", handler=handler(False))
    assert len(calls) == 1 and summary.done == 1
    again = replayed[-1]
    assert again == original, again
    assert {k: type(v) for k, v in again.items()} == {k: type(v) for k, v in original.items()}


def test_nan_in_an_effect_result_does_not_fail_a_delivered_effect(engine: Engine) -> None:
    root = _root()
    calls: list[str] = []
    replayed: list[Any] = []

    def handler(crash: bool) -> Any:
        def measure(row: dict[str, Any], ctx: RowContext) -> None:
            got = ctx.once("m", lambda key: calls.append(key) or {"x": float("nan"), "y": math.inf})
            replayed.append(got)
            if crash:
                raise Crash

        return measure

    with pytest.raises(Crash), _executor(engine, root, on_error="fail_fast") as ex:
        ex.run([{"id": 1}], key="id", handler=handler(True))
    with _executor(engine, root, run_id="run-2", on_error="fail_fast") as ex:
        summary = ex.run([{"id": 1}], key="id", handler=handler(False))
    assert summary.done == 1 and len(calls) == 1, (summary, calls)
    assert math.isnan(replayed[-1]["x"]) and replayed[-1]["y"] == math.inf
    with engine.connect() as conn:
        status = conn.execute(
            text("SELECT status FROM orbit.effect_records WHERE root_run_id = :r"), {"r": root}
        ).scalar()
    assert status == "succeeded"


class _Opaque:
    """A result type no codec knows."""


def test_unrecordable_effect_result_is_e4008_at_the_call(engine: Engine) -> None:
    root = _root()
    calls: list[str] = []

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        if row["id"] == 1:
            ctx.once("opaque", lambda key: calls.append(key) or _Opaque())

    with _executor(engine, root) as ex:
        summary = ex.run([{"id": 1}, {"id": 2}], key="id", handler=handle)
    assert (summary.done, summary.quarantined) == (1, 1)
    statuses = _by_status(engine, root)
    assert statuses["quarantined"] == [("1", "E-4008")]
    # The effect did happen: whatever the ledger holds, it is never repeated, and never
    # replayed as None (the code records it as happened; a replay raises E-4008).
    with _executor(engine, root, run_id="run-2") as ex:
        ex.run([{"id": 1}, {"id": 2}], key="id", handler=handle)
    assert len(calls) == 1


@pytest.mark.parametrize("value", ["a\x00b", "\udc80", {"k\x00": "\ud800"}], ids=repr)
def test_emitted_nul_or_surrogate_strings_round_trip(engine: Engine, value: Any) -> None:
    # The contract lists these as E-1015; the codec (store/value_codec.py) keeps them
    # losslessly instead, which also keeps the step from blocking (issue item 8). This pins
    # what the code does: the row is done and its result comes back unchanged.
    root = _root()
    with _executor(engine, root) as ex:
        summary = ex.run([{"id": "x"}], key="id", handler=lambda r, ctx: ctx.emit(value))
    assert summary.done == 1
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT result FROM orbit.row_outcomes WHERE root_run_id = :r"), {"r": root}
        ).scalar()
    assert value_codec.decode(stored) == value


# -- item 8: poison values quarantine their row, the batch commits ---------------------------


def _emit_object(row: dict[str, Any], ctx: RowContext) -> None:
    ctx.emit({"value": object()} if row["id"] == "poison" else {"ok": True})
    ctx.agg["sum"].add(row["v"] if row["id"] != "poison" else 0)


def _sum_none(row: dict[str, Any], ctx: RowContext) -> None:
    ctx.agg["sum"].add(None if row["id"] == "poison" else row["v"])


def _sum_str(row: dict[str, Any], ctx: RowContext) -> None:
    ctx.agg["sum"].add("12" if row["id"] == "poison" else row["v"])


def _plain(row: dict[str, Any], ctx: RowContext) -> None:
    ctx.agg["sum"].add(row["v"])


POISON = [
    pytest.param("a\x00b", _plain, "E-1014", id="nul-key"),
    pytest.param("\ud800", _plain, "E-1014", id="lone-surrogate-key"),
    pytest.param({"k": 1}, _plain, "E-1014", id="dict-key"),
    pytest.param("poison", _emit_object, "E-1015", id="emit-object"),
    pytest.param("poison", _sum_none, "E-1015", id="sum-none"),
    pytest.param("poison", _sum_str, "E-1015", id="sum-str"),
]


@pytest.mark.parametrize(("poison_key", "handler", "code"), POISON)
def test_poison_row_is_quarantined_and_the_rest_of_its_batch_commits(
    engine: Engine, poison_key: Any, handler: Any, code: str
) -> None:
    root = _root()
    rows = [{"id": "a", "v": 1}, {"id": poison_key, "v": 100}, {"id": "b", "v": 2}]
    with _executor(engine, root, batch_size=10) as ex:
        summary = ex.run(rows, key="id", handler=handler, aggregations={"sum": Sum()})
    assert (summary.done, summary.quarantined) == (2, 1), summary
    assert summary.aggregations["sum"] == 3
    statuses = _by_status(engine, root)
    assert sorted(k for k, _ in statuses["done"]) == ["a", "b"]
    assert [c for _, c in statuses["quarantined"]] == [code]
    with engine.connect() as conn:
        saved = conn.execute(
            text("SELECT state FROM orbit.aggregation_state WHERE root_run_id = :r"), {"r": root}
        ).scalar()
    assert saved == 3

    # A rerun does not hold or retry the step: everything is settled.
    with _executor(engine, root, run_id="run-2", batch_size=10) as ex:
        again = ex.run(rows, key="id", handler=handler, aggregations={"sum": Sum()})
    assert again.done == 0 and again.aggregations["sum"] == 3


@pytest.mark.parametrize(("poison_key", "handler", "code"), POISON)
def test_poison_row_stops_fail_fast_with_a_non_retryable_code_after_committing_before(
    engine: Engine, poison_key: Any, handler: Any, code: str
) -> None:
    root = _root()
    rows = [{"id": "a", "v": 1}, {"id": poison_key, "v": 100}, {"id": "b", "v": 2}]
    with (
        pytest.raises(StepFailed) as raised,
        _executor(engine, root, batch_size=10, on_error="fail_fast") as ex,
    ):
        ex.run(rows, key="id", handler=handler, aggregations={"sum": Sum()})
    assert raised.value.code == code
    assert not is_retryable(raised.value.code)
    statuses = _by_status(engine, root)
    assert [k for k, _ in statuses["done"]] == ["a"]


# -- found after the first fix (22c1cb5), fixed since: keys that collided or came out raw --


@pytest.mark.parametrize(
    "nan", [np.float32("nan"), np.float16("nan"), Decimal("sNaN")], ids=["f32", "f16", "sNaN"]
)
def test_every_nan_flavour_is_a_missing_key(engine: Engine, nan: Any) -> None:
    # np.float32 NaN is not a Python float: keys.py hashed it as the number "nan", so two
    # such rows were one key (the second dropped as a duplicate). Decimal('sNaN') raised a
    # raw decimal.InvalidOperation out of run(): the step blocked on one row.
    root = _root()
    seen: list[Any] = []
    rows = [{"id": nan, "v": 1}, {"id": 2, "v": 2}, {"id": nan, "v": 3}]
    with _executor(engine, root) as ex:
        summary = ex.run(rows, key="id", handler=lambda r, ctx: seen.append(r["v"]))
    assert seen == [2]
    assert (summary.done, summary.quarantined, summary.duplicates) == (1, 2, 0), summary
    assert [c for _, c in _by_status(engine, root)["quarantined"]] == ["E-1013", "E-1013"]


@pytest.mark.parametrize(
    "pair",
    [
        (("a\x1fb",), ("a", "b")),  # tuple elements joined by \x1f, a str may hold \x1f
        (Decimal("1.00000000000000001"), Decimal("1.00000000000000002")),  # via float()
    ],
    ids=["tuple-unit-separator", "decimal-precision"],
)
def test_distinct_keys_never_collide(engine: Engine, pair: tuple[Any, Any]) -> None:
    root = _root()
    seen: list[Any] = []
    rows = [{"id": pair[0]}, {"id": pair[1]}]
    assert pair[0] != pair[1]
    with _executor(engine, root) as ex:
        summary = ex.run(rows, key="id", handler=lambda r, ctx: seen.append(r["id"]))
    assert summary.duplicates == 0 and seen == list(pair), (summary, seen)


def test_a_key_function_that_raises_for_one_row_quarantines_that_row(engine: Engine) -> None:
    # The contract is silent on this; the rule (item 8: a value that concerns only
    # its row quarantines that row) says so. Today the raw ZeroDivisionError leaves run().
    root = _root()

    def key_of(row: dict[str, Any]) -> Any:
        return row["id"] / row["div"]

    rows = [{"id": 1, "div": 1}, {"id": 2, "div": 0}, {"id": 3, "div": 1}]
    with _executor(engine, root) as ex:
        summary = ex.run(rows, key=key_of, handler=lambda r, ctx: None)
    assert (summary.done, summary.quarantined) == (2, 1), summary
    assert next(c for _, c in _by_status(engine, root)["quarantined"]).startswith("E-1")


def test_a_row_without_the_key_column_is_a_missing_key(engine: Engine) -> None:
    # Guard (passes since 22c1cb5): a dict row lacking the key column is quarantined.
    root = _root()
    rows = [{"id": 1}, {"other": 2}, {"id": 3}]
    with _executor(engine, root) as ex:
        summary = ex.run(rows, key="id", handler=lambda r, ctx: None)
    assert (summary.done, summary.quarantined) == (2, 1)
    assert [c for _, c in _by_status(engine, root)["quarantined"]] == ["E-1013"]


@pytest.mark.parametrize(
    ("ids", "batch_size"),
    [(["a", "a", "b"], 10), (["a", "b", "a"], 2), ([1, 1.0, 2], 10)],
    ids=["same-batch", "later-batch", "int-and-float"],
)
def test_batch_sink_never_gets_a_key_twice(engine: Engine, ids: list[Any], batch_size: int) -> None:
    # run_batches (execution/batch_runner.py) keeps no set of keys seen: a duplicate in a
    # later batch is sent to the sink again (done=3), one in the same batch breaks the
    # batch_members primary key (raw UniqueViolation, the step blocks).
    from orbit_pipelines.execution.batch_runner import run_batches

    root = _root()
    sent: list[Any] = []
    with _executor(engine, root, batch_size=batch_size) as ex:
        summary = run_batches(
            ex,
            [{"id": i} for i in ids],
            key="id",
            sink=lambda rows, info: sent.extend(r["id"] for r in rows),
        )
    assert len(sent) == 2 and summary.done == 2, (sent, summary)


def test_a_token_whose_value_cannot_be_folded_is_not_recorded_done(engine: Engine) -> None:
    # Token 1 of row 1 adds a str to Sum: the fold fails (E-1015) and the row is quarantined,
    # but the token itself was recorded 'done' with its value lost (a bad ctx.emit in a
    # token, by contrast, records the token 'failed' E-1015).
    root = _root()

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        for token in ctx.fork(3):
            with token:
                ctx.agg["sum"].add("x" if (row["id"] == 1 and token.no == 1) else 1)

    with _executor(engine, root) as ex:
        summary = ex.run(
            [{"id": i} for i in range(3)], key="id", handler=handle, aggregations={"sum": Sum()}
        )
    assert (summary.done, summary.quarantined) == (2, 1)
    with engine.connect() as conn:
        tokens = conn.execute(
            text(
                "SELECT t.token_no, t.status, t.error_code FROM orbit.row_tokens t "
                "JOIN orbit.row_outcomes r USING (root_run_id, step_key, key_hash) "
                "WHERE t.root_run_id = :r AND r.row_key = '1' ORDER BY 1"
            ),
            {"r": root},
        ).all()
    assert [tuple(t) for t in tokens][:2] == [(0, "done", None), (1, "failed", "E-1015")], tokens


@pytest.mark.parametrize(
    "result",
    [
        {1: "a"},  # JSON's fast path turns the int key into "1"
        {1: "a", "1": "b"},  # ... and then one of the two entries is lost
        np.datetime64("2026-01-01T10:00:00.123456789"),  # recorded, but the replay raises
        pd.Timestamp("2026-01-01 10:00:00.123456789"),  # comes back a datetime, ns lost
    ],
    ids=["int-key", "int-and-str-key", "datetime64", "timestamp-ns"],
)
def test_more_effect_results_replay_exactly_after_a_crash(engine: Engine, result: Any) -> None:
    root = _root()
    calls: list[str] = []
    replayed: list[Any] = []

    def handler(crash: bool) -> Any:
        def pay(row: dict[str, Any], ctx: RowContext) -> None:
            replayed.append(ctx.once("pay", lambda key: calls.append(key) or result))
            if crash:
                raise Crash

        return pay

    with pytest.raises(Crash), _executor(engine, root, on_error="fail_fast") as ex:
        ex.run([{"id": 1}], key="id", handler=handler(True))
    with _executor(engine, root, run_id="run-2", on_error="fail_fast") as ex:
        ex.run([{"id": 1}], key="id", handler=handler(False))
    assert len(calls) == 1
    again = replayed[-1]
    assert type(again) is type(result) and again == result, repr(again)


def test_aggregation_state_with_int_keys_resumes_exactly(engine: Engine) -> None:
    # A count per int id: after a crash the saved state comes back with str keys, the
    # resumed fold adds int keys beside them, and the result differs from a crash-free run.
    from orbit_pipelines.execution import Aggregation

    def count_by(state: dict[Any, int], value: Any) -> dict[Any, int]:
        return {**state, value: state.get(value, 0) + 1}

    agg = {"by": Aggregation(initial=dict, fold=count_by)}
    rows = [{"id": i, "g": g} for i, g in enumerate([1, 2, 1, 1, 2, 1])]

    def handler(crash_at: int | None) -> Any:
        def handle(row: dict[str, Any], ctx: RowContext) -> None:
            if row["id"] == crash_at:
                raise Crash
            ctx.agg["by"].add(row["g"])

        return handle

    root = _root()
    with pytest.raises(Crash), _executor(engine, root, batch_size=2) as ex:
        ex.run(rows, key="id", handler=handler(3), aggregations=agg)
    with _executor(engine, root, run_id="run-2", batch_size=2) as ex:
        resumed = ex.run(rows, key="id", handler=handler(None), aggregations=agg)
    assert resumed.aggregations["by"] == {1: 4, 2: 2}, resumed.aggregations
