"""Property test of the row API (issue 12): generated keys, values, batch sizes, crash points.

Against the real Postgres; every example is its own logical run (a fresh root_run_id),
so the database is shared across examples but no state is. Checked, whatever Hypothesis
generates:

- every distinct valid key is handled to done exactly once across the attempts: its
  transactional effect (an INSERT into a receiver table with no unique constraint, so a
  second delivery would be a second row) is at the receiver exactly once;
- every invalid key (missing: None, NaN, ""; unusable: NUL, lone surrogate) is quarantined
  with E-1013 / E-1014 and never reaches the handler;
- ``Sum`` equals a Python reference that ignores invalid keys and later duplicates, for
  every batch size, with or without a crash.

The key rule is the issue 12 contract's: ints and integral floats are one key, ``"1"`` and
``1`` are two.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from hashlib import blake2b
from typing import Any

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from orbit_pipelines.execution import (
    ExecutorOptions,
    RowContext,
    RowExecutor,
    RunScope,
    Sum,
)
from orbit_pipelines_tests.execution.helpers import Crash

MISSING = "E-1013"
BATCH_SIZES = [1, 2, 3, 7, 100]
UNUSABLE = "E-1014"

small_ints = st.integers(-3, 3)
AN_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
A_TIME = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
# \x1f and ")" inside tuple parts: the separators a naive composite encoding would use.
tuple_parts = st.one_of(small_ints, st.sampled_from(["a", "b", "1", "ß", "a\x1fb", ")", "(a"]))
keys = st.one_of(
    small_ints,  # duplicates are likely
    small_ints.map(float),  # the same keys as the ints above
    small_ints.map(Decimal),  # and again
    small_ints.map(np.int64),  # and again
    st.just(-0.0),  # the int 0
    st.booleans(),  # not the ints 1 and 0
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=True).filter(lambda f: not f.is_integer()),
    st.sampled_from([AN_ID, str(AN_ID), A_TIME, A_TIME.isoformat(), b"ab", "6162"]),
    st.tuples(tuple_parts, tuple_parts),
    st.tuples(tuple_parts),
    st.just(None),
    st.just(float("nan")),
    st.just(np.float64("nan")),
    st.just(""),
    st.sampled_from(
        ["1", "-1", "1.0", "None", "nan", "True", "0", " ", "\x1f", "a\x1fb", "ß", "🦀"]
    ),
    st.text(max_size=4),
    st.text(min_size=300, max_size=3000),
    st.text(max_size=3).map(lambda s: s + "\x00"),
    st.text(max_size=3).map(lambda s: "\ud800" + s),
    st.just({"not": "a key"}),
)
rows_strategy = st.lists(st.tuples(keys, st.integers(-1000, 1000)), max_size=25)


def reference_key(key: Any) -> tuple[str, Any]:
    """("ok", canonical) or ("bad", code), by the contract's key rule."""
    if key is None:
        return ("bad", MISSING)
    if isinstance(key, bool):
        return ("ok", ("bool", key))
    if isinstance(key, np.integer):
        return ("ok", ("int", int(key)))
    if isinstance(key, Decimal):
        assert key == key.to_integral_value()  # only integral Decimals are generated
        return ("ok", ("int", int(key)))
    if isinstance(key, float):
        if math.isnan(key):
            return ("bad", MISSING)
        if key.is_integer():
            return ("ok", ("int", int(key)))
        return ("ok", ("num", key))
    if isinstance(key, int):
        return ("ok", ("int", key))
    if isinstance(key, uuid.UUID):
        return ("ok", ("str", str(key)))
    if isinstance(key, datetime):
        return ("ok", ("time", key.isoformat()))
    if isinstance(key, bytes):
        return ("ok", ("bytes", key.hex()))
    if isinstance(key, tuple):
        parts = [reference_key(k) for k in key]
        bad = [p for p in parts if p[0] == "bad"]
        return bad[0] if bad else ("ok", ("tuple", tuple(p[1] for p in parts)))
    if not isinstance(key, str):
        return ("bad", UNUSABLE)
    if key == "":
        return ("bad", MISSING)
    if "\x00" in key:
        return ("bad", UNUSABLE)
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return ("bad", UNUSABLE)
    return ("ok", ("str", key))


def effect_key(canonical: Any) -> str:
    """A plain effect key per logical row key (type included: 1 and "1" differ)."""
    return blake2b(repr(canonical).encode(), digest_size=16).hexdigest()


@pytest.fixture
def receiver(engine: Engine) -> Iterator[Engine]:
    """A receiver table with no unique constraint: a second delivery is a second row."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE public.prop_receiver (root text, k text, v int)"))
    yield engine


def _run(
    engine: Engine,
    root: str,
    run_id: str,
    rows: list[dict[str, Any]],
    batch_size: int,
    crash_at: int | None,
    handled: list[Any],
) -> Any:
    calls = 0

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        nonlocal calls
        handled.append(row["k"])
        kind, canonical = reference_key(row["k"])
        if kind != "ok":
            return  # checked after the run: an assert here would only quarantine the row
        fx = effect_key(canonical)

        def deliver(conn: psycopg.Connection) -> None:
            conn.execute(
                "INSERT INTO public.prop_receiver (root, k, v) VALUES (%s, %s, %s)",
                (root, fx, row["v"]),
            )

        ctx.once(fx, deliver, receiver="transactional")
        ctx.agg["sum"].add(row["v"])
        if calls == crash_at:
            raise Crash  # after the effect: the open batch, effect included, is abandoned
        calls += 1

    options = ExecutorOptions(batch_size=batch_size, on_error="quarantine", heartbeat_every_s=1.0)
    with RowExecutor(engine, RunScope(root, run_id, "prop"), options) as ex:
        return ex.run(rows, key="k", handler=handle, aggregations={"sum": Sum()})


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pairs=rows_strategy,
    batch_size=st.sampled_from(BATCH_SIZES),
    crash_at=st.none() | st.integers(0, 25),
    rerun_batch_size=st.sampled_from(BATCH_SIZES),
    crash_again_at=st.none() | st.integers(0, 25),
)
def test_every_valid_key_once_every_invalid_key_quarantined_sum_independent_of_batches(
    receiver: Engine,
    pairs: list[tuple[Any, int]],
    batch_size: int,
    crash_at: int | None,
    rerun_batch_size: int,
    crash_again_at: int | None,
) -> None:
    engine = receiver
    root = f"prop-{uuid.uuid4().hex}"
    rows = [{"k": k, "v": v} for k, v in pairs]

    # The reference: first occurrence of each valid key counts; invalid keys are set aside.
    first: dict[Any, int] = {}
    bad_codes: Counter[str] = Counter()
    for k, v in pairs:
        kind, canonical = reference_key(k)
        if kind == "bad":
            bad_codes[canonical] += 1
        else:
            first.setdefault(canonical, v)
    expected_sum = sum(first.values())

    handled: list[Any] = []
    crashed = False
    try:
        summary = _run(engine, root, "run-1", rows, batch_size, crash_at, handled)
    except Crash:
        crashed = True
        try:  # the recovery, with another batch size, may crash too
            _run(engine, root, "run-2", rows, rerun_batch_size, crash_again_at, handled)
        except Crash:
            pass
    # The last attempt (else: a no-op that must redo nothing).
    again = _run(engine, root, "run-3", rows, rerun_batch_size, None, handled)
    if not crashed:
        assert summary.aggregations["sum"] == expected_sum
        assert again.done == 0, f"a finished step redid {again.done} rows"
    assert again.aggregations["sum"] == expected_sum, (again.aggregations, expected_sum)

    with engine.connect() as conn:
        delivered = dict(
            conn.execute(
                text("SELECT k, count(*) FROM public.prop_receiver WHERE root = :r GROUP BY k"),
                {"r": root},
            ).all()
        )
        ledger = conn.execute(
            text(
                "SELECT status, error_code, count(*) FROM orbit.row_outcomes "
                "WHERE root_run_id = :r GROUP BY status, error_code"
            ),
            {"r": root},
        ).all()
        saved = conn.execute(
            text("SELECT state FROM orbit.aggregation_state WHERE root_run_id = :r"),
            {"r": root},
        ).scalar()

    assert delivered == {effect_key(c): 1 for c in first}, "each effect once at the receiver"
    by_status: dict[tuple[str, str | None], int] = {(s, c): n for s, c, n in ledger}
    assert by_status.get(("done", None), 0) == len(first), by_status
    quarantined = {c: n for (s, c), n in by_status.items() if s == "quarantined"}
    assert set(quarantined) == set(bad_codes), (quarantined, bad_codes)
    for code, n in quarantined.items():
        # One ledger row per bad row, or fewer if the executor folds identical bad keys.
        assert 1 <= n <= bad_codes[code], (code, n, bad_codes)
    assert set(by_status) <= {("done", None)} | {("quarantined", c) for c in bad_codes}
    assert saved == expected_sum or (saved is None and not first), saved
    assert all(reference_key(k)[0] == "ok" for k in handled), f"invalid keys handled: {handled!r}"
    if not crashed:
        assert len(handled) == len(first), "a key was handled twice in one run"


def test_reference_key_rule_itself() -> None:
    # The reference above is the contract; pin it so a test bug cannot hide a code bug.
    assert reference_key(1) == reference_key(1.0) != reference_key("1")
    assert (
        reference_key(None) == reference_key(float("nan")) == reference_key("") == ("bad", MISSING)
    )
    assert reference_key("a\x00") == reference_key("\ud800") == ("bad", UNUSABLE)
    assert reference_key(" ")[0] == "ok"
    assert reference_key(True) != reference_key(1)
    assert reference_key(Decimal(2)) == reference_key(np.int64(2)) == reference_key(-0.0 + 2)
    assert reference_key(AN_ID) == reference_key(str(AN_ID))
    assert reference_key(("a", 1.0)) == reference_key(("a", 1)) != reference_key(("a", "1"))
    assert reference_key(("a", None)) == ("bad", MISSING)
