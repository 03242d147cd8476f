"""What goes into the output store comes back exactly: DataFrames, JSON values, chunking."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, func, select, update

from orbit_pipelines.errors import OrbitError
from orbit_pipelines.store.output_codecs import choose_encoding, decode
from orbit_pipelines.store.step_outputs import (
    OutputKey,
    find_latest_in_group,
    find_output,
    read_payload,
    write_output,
)
from orbit_pipelines.store.tables import step_output_chunks, step_outputs


def round_trip(
    engine: Engine,
    value: object,
    *,
    chunk_bytes: int = 64 * 1024,
    allow_pickle: bool = False,
    run_id: str = "run-1",
) -> Any:
    """Store ``value`` through the real tables and read it back."""
    encoding = choose_encoding(value, allow_pickle=allow_pickle)
    write_output(
        engine,
        OutputKey(run_id, "step", "result"),
        root_run_id="root",
        format=encoding.format,
        type_name=encoding.type_name,
        row_count=encoding.row_count,
        code_version="1",
        config_hash="c",
        write_payload=encoding.write,
        chunk_bytes=chunk_bytes,
    )
    with engine.connect() as conn:
        stored = find_output(conn, OutputKey(run_id, "step", "result"))
    assert stored is not None
    return decode(stored.format, read_payload(engine, stored), allow_pickle=allow_pickle)


def every_dtype_frame() -> pd.DataFrame:
    """int, float, str, nullable, tz-aware, categorical, object, timedelta; named index."""
    index = pd.date_range("2026-03-29", periods=6, freq="h", tz="Europe/Berlin", name="at")
    return pd.DataFrame(
        {
            "i64": np.arange(6, dtype="int64"),
            "i8": np.arange(6, dtype="int8"),
            "u32": np.arange(6, dtype="uint32"),
            "f64": [0.5, np.nan, 2.5, np.inf, -1.0, 0.0],
            "f32": np.arange(6, dtype="float32"),
            "b": [True, False, True, True, False, False],
            "s": pd.Series(["a", None, "c", "ä", "", "f"], dtype="str", index=index),
            "s_python": pd.array(["a", None, "c", "d", "e", "f"], dtype="string[python]"),
            "s_arrow": pd.array(["a", None, "c", "d", "e", "f"], dtype="string[pyarrow]"),
            "obj": pd.Series(["a", None, "c", "d", "e", "f"], dtype=object, index=index),
            "Int64": pd.array([1, None, 3, 4, 5, 6], dtype="Int64"),
            "Float64": pd.array([1.5, None, 3, 4, 5, 6], dtype="Float64"),
            "boolean": pd.array([True, None, False, True, False, True], dtype="boolean"),
            "utc": pd.date_range("2026-01-01", periods=6, freq="D", tz="UTC"),
            "utc_ns": pd.date_range("2026-01-01", periods=6, freq="D", tz="UTC").astype(
                "datetime64[ns, UTC]"
            ),
            "naive": pd.date_range("2026-01-01", periods=6, freq="min"),
            "with_nat": pd.to_datetime(
                ["2026-01-01", None, "2026-01-03", None, None, None]
            ).tz_localize("America/New_York"),
            "td": pd.to_timedelta(np.arange(6), unit="s"),
            "cat": pd.Categorical(
                ["lo", "hi", None, "lo", "mid", "hi"], categories=["lo", "mid", "hi"], ordered=True
            ),
            "cat_int": pd.Categorical([3, 1, 2, 3, 1, 2]),
        },
        index=index,
    )


def test_every_dtype_and_the_index_survive(engine: Engine) -> None:
    frame = every_dtype_frame()
    frame.attrs["source"] = "carrier feed"

    back = round_trip(engine, frame, chunk_bytes=1024)

    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert list(back.dtypes.astype(str)) == list(frame.dtypes.astype(str))
    assert back["s_python"].dtype.storage == "python"
    assert back["obj"].tolist()[1] is None
    assert back.index.freq == frame.index.freq
    assert back.attrs == {"source": "carrier feed"}


@pytest.mark.parametrize(
    "index",
    [
        pd.RangeIndex(5, 20, 3),
        pd.Index(["x", "y", "z", "w", "v"], name="key"),
        pd.MultiIndex.from_product([["a"], [1, 2, 3, 4, 5]], names=["g", "n"]),
        pd.Index([3, 1, 4, 1, 5]),
    ],
    ids=["range", "named-str", "multi", "int-with-duplicates"],
)
def test_indexes_survive(engine: Engine, index: pd.Index) -> None:
    frame = pd.DataFrame({"v": [1.0, 2.0, 3.0, 4.0, 5.0]}, index=index)
    back = round_trip(engine, frame)
    pd.testing.assert_frame_equal(back, frame, check_index_type=True)
    assert type(back.index) is type(frame.index)


def test_large_range_indexed_frame_written_in_slices_keeps_its_range(engine: Engine) -> None:
    rows = 600_000  # several Arrow slices / Parquet row groups, many chunks
    frame = pd.DataFrame(
        {"a": np.arange(rows, dtype="int64"), "s": pd.Series(np.arange(rows)).astype("str")},
        index=pd.RangeIndex(rows, 3 * rows, 2),
    )
    frame.loc[frame.index[rows - 1], "s"] = None
    back = round_trip(engine, frame, chunk_bytes=256 * 1024)
    pd.testing.assert_frame_equal(back, frame, check_index_type=True)
    with engine.connect() as conn:
        chunks = conn.execute(select(func.count()).select_from(step_output_chunks)).scalar_one()
    assert chunks > 3


def test_empty_frame_round_trips(engine: Engine) -> None:
    frame = pd.DataFrame({"a": pd.Series([], dtype="Int64"), "b": pd.Series([], dtype="str")})
    pd.testing.assert_frame_equal(round_trip(engine, frame), frame)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        2**70,
        -1.25,
        "naïve ✓",
        [],
        {},
        [1, "two", None, [3.5, {"k": False}]],
        {"rows": 3, "nested": {"list": [1, 2], "empty": {}}, "unicode": "日本"},
    ],
)
def test_json_values_round_trip_exactly(engine: Engine, value: object) -> None:
    back = round_trip(engine, value)
    assert back == value
    assert type(back) is type(value)


def test_nan_round_trips(engine: Engine) -> None:
    back = round_trip(engine, {"x": float("nan")})
    assert np.isnan(back["x"])


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ((1, 2), "tuple"),
        ({1: "a"}, "int key"),
        ({"when": pd.Timestamp("2026-01-01")}, "Timestamp"),
        ([np.int64(3)], "numpy.int64"),
        ({1, 2}, "set"),
        (pd.Series([1, 2]), "Series"),
    ],
)
def test_values_json_would_change_are_refused_without_pickle(
    engine: Engine, value: object, detail: str
) -> None:
    with pytest.raises(OrbitError) as raised:
        choose_encoding(value, allow_pickle=False)
    assert raised.value.code == "E-2009"
    assert detail in raised.value.message
    assert raised.value.hint is not None and "allow_pickle" in raised.value.hint


def test_pickle_when_allowed_and_refused_on_load_when_not(engine: Engine) -> None:
    value = {"when": pd.Timestamp("2026-01-01", tz="UTC"), "pair": (1, 2)}
    assert round_trip(engine, value, allow_pickle=True) == value
    with engine.connect() as conn:
        stored = find_output(conn, OutputKey("run-1", "step", "result"))
    assert stored is not None and stored.format == "pickle"
    with pytest.raises(OrbitError) as raised:
        decode(stored.format, read_payload(engine, stored), allow_pickle=False)
    assert raised.value.code == "E-2009"


def test_mixed_column_names_are_refused() -> None:
    with pytest.raises(OrbitError) as raised:
        choose_encoding(pd.DataFrame({"a": [1], 2: [3]}), allow_pickle=False)
    assert raised.value.code == "E-2009"


def test_rewrite_replaces_and_group_lookup_finds_the_newest(engine: Engine) -> None:
    round_trip(engine, {"v": 1}, run_id="run-1")
    round_trip(engine, {"v": 2}, run_id="run-1")
    round_trip(engine, {"v": 3}, run_id="run-2")
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(step_outputs)).scalar_one()
        newest = find_latest_in_group(conn, "root", "step", "result")
        chunk_count = conn.execute(
            select(func.count()).select_from(step_output_chunks)
        ).scalar_one()
    assert count == 2
    assert chunk_count == 2, "the replaced output's chunks are gone"
    assert newest is not None and newest.run_id == "run-2"


def test_damaged_chunks_are_detected(engine: Engine) -> None:
    round_trip(engine, {"v": "x" * 100})
    with engine.begin() as conn:
        conn.execute(update(step_output_chunks).values(data=b'{"v":"y"}'))
    with engine.connect() as conn:
        stored = find_output(conn, OutputKey("run-1", "step", "result"))
    assert stored is not None
    with pytest.raises(OrbitError) as raised:
        read_payload(engine, stored)
    assert raised.value.code == "E-4006"


def test_a_failing_encoder_leaves_nothing_behind(engine: Engine) -> None:
    def explode(sink: Any) -> None:
        sink.write(b"x" * 5000)
        raise RuntimeError("encoder died")

    with pytest.raises(RuntimeError):
        write_output(
            engine,
            OutputKey("run-9", "step", "result"),
            root_run_id="root",
            format="json",
            type_name="builtins.dict",
            row_count=None,
            code_version=None,
            config_hash=None,
            write_payload=explode,
            chunk_bytes=1024,
        )
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(step_outputs)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(step_output_chunks)).scalar_one() == 0


def test_a_frame_arrow_cannot_convert_fails_with_e2009_and_stores_nothing(engine: Engine) -> None:
    frame = pd.DataFrame({"mixed": pd.Series([1, "two", 3.0], dtype=object)})
    with pytest.raises(OrbitError) as raised:
        round_trip(engine, frame)
    assert raised.value.code == "E-2009"
    assert "mixed" in raised.value.message
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(step_outputs)).scalar_one() == 0


def test_multiindex_and_named_columns_survive(engine: Engine) -> None:
    columns = pd.MultiIndex.from_tuples([("a", "x"), ("a", "y"), ("b", "x")], names=["l1", "l2"])
    frame = pd.DataFrame([[1, 2.5, "p"], [3, 4.5, "q"]], columns=columns)
    pd.testing.assert_frame_equal(round_trip(engine, frame), frame)
    named = pd.DataFrame({"a": [1, 2]}, index=pd.Index(["r", "s"], name="row"))
    named.columns.name = "fields"
    back = round_trip(engine, named)
    pd.testing.assert_frame_equal(back, named)
    assert back.columns.name == "fields"
