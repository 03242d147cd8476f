"""The executor's per-row fast paths (issue 16): batch key digests, the reused RowContext,
the recent handled keys. Each must give exactly what the row-by-row code gave."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from orbit_pipelines.execution import RowContext, Sum, row_key_hash
from orbit_pipelines.execution.done_set import HASH_DTYPE
from orbit_pipelines.execution.executor import _RECENT_KEYS, HandledKeys
from orbit_pipelines.execution.keys import RowKeyError, batch_keys, canonical_key
from orbit_pipelines_tests.execution.helpers import executor

ints = st.one_of(
    st.integers(-5, 5),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, -(2**63), 10**4000]),
)
texts = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", "a\x00b", "\ud800", "ß", "1", " ", "\x00"]),
)


def _one_by_one(values: list[Any]) -> tuple[list[str], list[bytes]] | None:
    try:
        keys = [canonical_key(v) for v in values]
    except (RowKeyError, ValueError):
        return None
    return [k.display for k in keys], [k.digest for k in keys]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(ints, max_size=20), st.lists(texts, max_size=20)))
def test_batch_digests_are_the_key_rule_s_digests(values: list[Any]) -> None:
    # The ledgers already written depend on the rule: the batch path must give the same
    # display and digest for every key, and leave every refused key to the row-by-row path.
    expected = _one_by_one(values)
    got = batch_keys(values)
    if values:
        assert got == expected
    assert batch_keys([*values, 1.5]) is None  # a mixed batch goes key by key


def test_a_bool_or_an_int_subclass_never_takes_the_int_path() -> None:
    assert batch_keys([True, False]) is None
    assert batch_keys([1, True]) is None
    # The digests a ledger of bools and ints has are the rule's own.
    assert row_key_hash(True) != row_key_hash(1)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 1000])
def test_every_row_gets_a_fresh_context(engine: Engine, batch_size: int) -> None:
    # One RowContext serves the whole run: whatever a row left in it (a result, values,
    # tokens, a raise halfway) must be gone when the next row starts, in any batch.
    rows = [{"id": k} for k in ["emit", "plain", "agg", "raise", "plain2", "fork", "last"]]
    seen: list[str] = []

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        key = row["id"]
        assert ctx.row_key == key
        assert ctx.key_hash == row_key_hash(key)
        assert ctx._result_text is None and ctx._result is None and ctx._tokens is None
        assert ctx._pending_agg == []
        seen.append(key)
        if key == "emit":
            ctx.emit({"x": 1})
        elif key == "agg":
            ctx.agg["n"].add(5)
        elif key == "raise":
            ctx.emit("half")
            ctx.agg["n"].add(100)
            raise ValueError("bad row")
        elif key == "fork":
            for token in ctx.fork(2):
                with token:
                    ctx.agg["n"].add(1)

    root = uuid.uuid4().hex
    with executor(engine, root_run_id=root, batch_size=batch_size, on_error="quarantine") as ex:
        summary = ex.run(rows, key="id", handler=handle, aggregations={"n": Sum()})
    assert seen == [r["id"] for r in rows]
    assert (summary.done, summary.quarantined) == (6, 1)
    assert summary.aggregations == {"n": 7}  # 5 + two tokens, nothing of the raised row


def test_executor_digests_are_row_key_hash(engine: Engine) -> None:
    root = uuid.uuid4().hex
    keys: list[Any] = [*range(-50, 50), 2**64, *(f"k{n}" for n in range(100))]
    with executor(engine, root_run_id=root, batch_size=64) as ex:
        ex.run([{"id": k} for k in keys], key="id", handler=lambda row, ctx: None)
        done = ex.load_done()
    wanted = np.frombuffer(b"".join(row_key_hash(k) for k in keys), dtype=HASH_DTYPE)
    assert done.contains(wanted).all()
    assert len(done) == len(keys)


def test_a_key_met_again_long_after_is_not_handled_twice(engine: Engine) -> None:
    # Past _RECENT_KEYS the handled keys move from the recent set into SeenKeys' levels;
    # a duplicate is caught on either side of that move.
    n = _RECENT_KEYS + 1500
    order = [*range(n), 3, n - 10, _RECENT_KEYS - 1, n]
    calls: list[int] = []
    root = uuid.uuid4().hex
    with executor(engine, root_run_id=root, batch_size=1000) as ex:
        summary = ex.run(
            ({"id": k} for k in order), key="id", handler=lambda row, ctx: calls.append(row["id"])
        )
    assert sorted(calls) == list(range(n + 1))
    assert (summary.done, summary.duplicates) == (n + 1, 3)


def test_handled_keys_find_recent_digests_ending_in_nul_bytes() -> None:
    # numpy's S16 items drop trailing NULs: the recent set is searched with raw slices.
    handled = HandledKeys()
    ends_nul = b"\x07" * 8 + b"\x00" * 8
    handled.recent.add(ends_nul)
    handled.levels.add(np.frombuffer(b"\x01" * 16, dtype=HASH_DTYPE))
    query = np.frombuffer(ends_nul + b"\x01" * 16 + b"\x02" * 16, dtype=HASH_DTYPE)
    assert handled.contains(query).tolist() == [True, True, False]
    assert len(handled) == 2
    handled.settle()
    assert not handled.recent
    assert handled.contains(query).tolist() == [True, True, False]
