"""The frame path's column-at-once keys and its bounded "handed in this run" tracking.

``frames._chunk_keys`` must give exactly the digests of the one key rule
(``canonical_key``), or a frame step would not recognise its own done rows on resume; and
the keys met in this run are tracked in the executor's ``SeenKeys`` (numpy levels), not a
Python set per key, with a key met twice in a run still handled once.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from orbit_pipelines.dagster_io import frames
from orbit_pipelines.dagster_io.frames import frame_rows
from orbit_pipelines.execution import ExecutorOptions, RowExecutor, RunScope, Sum
from orbit_pipelines.execution.executor import PreparedKey
from orbit_pipelines.execution.keys import canonical_key


def _expected(value: Any) -> tuple[str, bytes] | None:
    try:
        key = canonical_key(value)
    except Exception:
        return None
    return key.display, key.digest


def _check_column(column: pd.Series) -> None:
    keys, digests, valid = frames._chunk_keys(column)
    assert len(keys) == len(column) == digests.shape[0] == valid.shape[0]
    for n, value in enumerate(column.tolist()):
        expected = _expected(value)
        if expected is None:
            assert not valid[n]
            assert not isinstance(keys[n], PreparedKey)  # the executor fails it itself
            continue
        assert valid[n]
        assert keys[n] == PreparedKey(*expected)
        assert digests[n : n + 1].tobytes() == expected[1]


def test_column_keys_are_the_digests_of_the_one_key_rule() -> None:
    _check_column(pd.Series(np.array([0, 1, -5, 2**62, -(2**63)], dtype="int64")))
    _check_column(pd.Series(np.array([0, 7, 2**64 - 1], dtype="uint64")))
    _check_column(pd.Series(np.array([3, 4], dtype="int32")))
    _check_column(pd.Series(["a", "b", "ü", "x y"]))
    _check_column(
        pd.Series(
            ["a", "", None, math.nan, "a\x00b", "\ud800", 3, 3.0, 2.5, (1, "x"), True, b"ab"],
            dtype=object,
        )
    )


def _run(engine: Engine, root: str, frame: pd.DataFrame, seen: list[Any]) -> Any:
    def handler(chunk: pd.DataFrame, fctx: Any) -> pd.DataFrame:
        seen.extend(chunk["id"].tolist())
        return pd.DataFrame({"total": chunk["amount"]}, index=chunk.index)

    options = ExecutorOptions(batch_size=4, on_error="quarantine")
    with RowExecutor(engine, RunScope(root, uuid.uuid4().hex, "frames"), options) as ex:
        source = frame_rows(ex, frame, "id", handler, ["total"])
        return ex.run(
            source,
            key=lambda item: item.key,
            handler=lambda item, ctx: item.apply(ctx),
            aggregations={"total": Sum()},
        )


def test_a_key_met_twice_in_a_run_is_handled_once_and_resume_hands_nothing(
    engine: Engine,
) -> None:
    # 7 twice in the first chunk, 1 and 2 again in later chunks, a missing key.
    ids = [1, 7, 2, 7, 3, 1, 4, 5, 2, None, 6, 8]
    frame = pd.DataFrame({"id": pd.Series(ids, dtype=object), "amount": range(len(ids))})
    root = uuid.uuid4().hex
    seen: list[Any] = []
    summary = _run(engine, root, frame, seen)
    assert sorted(seen) == [1, 2, 3, 4, 5, 6, 7, 8]  # each once, the bad key never
    assert summary.done == 8
    assert summary.duplicates == 3
    assert summary.quarantined == 1  # the missing key, E-1013
    # Each key's first row's amount: 1->0, 7->1, 2->2, 3->4, 4->6, 5->7, 6->10, 8->11.
    assert summary.aggregations["total"] == 0 + 1 + 2 + 4 + 6 + 7 + 10 + 11

    again: list[Any] = []
    resumed = _run(engine, root, frame, again)
    assert again == []
    assert resumed.done == 0
    assert resumed.skipped_already_done >= 8
    assert resumed.aggregations["total"] == summary.aggregations["total"]


def test_an_int_column_over_many_chunks_is_handed_once_per_key(engine: Engine) -> None:
    ids = np.concatenate([np.arange(40), np.arange(0, 40, 3)]).astype("int64")
    frame = pd.DataFrame({"id": ids, "amount": np.ones(len(ids))})
    seen: list[Any] = []
    summary = _run(engine, uuid.uuid4().hex, frame, seen)
    assert sorted(seen) == list(range(40))
    assert summary.done == 40
    assert summary.duplicates == len(range(0, 40, 3))
    assert summary.aggregations["total"] == 40


def test_seen_keys_merged_levels_find_every_key_and_no_other() -> None:
    # Levels merge by placing the newer sorted level into the older one: check it against
    # the plain set of what was added, with many keys sharing their first 8 bytes.
    from orbit_pipelines.execution.done_set import HASH_DTYPE, SeenKeys

    rng = np.random.default_rng(16)
    seen = SeenKeys()
    added: set[bytes] = set()
    for _ in range(40):
        words = rng.integers(0, 2**63, size=(int(rng.integers(1, 60)), 2), dtype=np.uint64)
        words[: len(words) // 2, 0] = 12345  # a shared first half
        raw = words.astype(">u8").tobytes()
        seen.add(np.frombuffer(raw, dtype=HASH_DTYPE))
        added.update(raw[i : i + 16] for i in range(0, len(raw), 16))
    assert len(seen) == len(added)
    probe = np.frombuffer(b"".join(sorted(added)), dtype=HASH_DTYPE)
    assert seen.contains(probe).all()
    others = rng.integers(0, 2**63, size=(200, 2), dtype=np.uint64)
    others[:100, 0] = 12345
    assert not seen.contains(np.frombuffer(others.astype(">u8").tobytes(), dtype=HASH_DTYPE)).any()
    for level in seen._levels:
        assert bool((level._hi[1:] >= level._hi[:-1]).all())
