"""How a step output becomes bytes and comes back: JSON, Parquet, or (opt-in) pickle.

No dagster here: the IO manager picks a codec, streams the bytes into the chunk writer of
``store.step_outputs`` and hands the bytes it reads back to ``decode``.

Rules:
- pandas DataFrames go to Parquet. Dtypes (nullable, categorical, tz-aware datetimes), the
  index, ``attrs`` and a DatetimeIndex ``freq`` survive. Arrow forgets a few pandas details
  (object columns of strings come back as ``str``, ``string[python]`` as ``string[pyarrow]``,
  an index ``freq`` is dropped), so we record them in our own schema metadata and restore them.
- Plain values go to JSON, but only when JSON gives back *exactly* the same value: a tuple
  would come back as a list and a dict with int keys as str keys, so those are refused.
- Anything else needs ``allow_pickle``: unpickling what a database hands back runs code.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orbit_pipelines.errors import E2009_UNSTORABLE_OUTPUT, OrbitError

JSON = "json"
PARQUET = "parquet"
PICKLE = "pickle"

_ORBIT_META_KEY = b"orbit"
# Rows per Arrow slice when writing Parquet: bounds the Arrow copy of a large frame to one
# slice instead of the whole frame (the slice also becomes one Parquet row group).
_ROWS_PER_SLICE_TARGET_BYTES = int(__import__("os").environ.get("SLICE_MB", "16")) * 1024 * 1024


@dataclass(frozen=True)
class Encoding:
    """A chosen codec for one value: what to record, and how to stream the bytes."""

    format: str
    type_name: str
    row_count: int | None
    write: Callable[[IO[bytes]], None]


def type_name(value: object) -> str:
    """``module.QualName`` of the value's type."""
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def choose_encoding(value: object, *, allow_pickle: bool) -> Encoding:
    """Pick JSON, Parquet or pickle for ``value``; raise E-2009 when none may be used."""
    if isinstance(value, pd.DataFrame):
        frame = value
        _check_frame(frame)
        return Encoding(
            PARQUET, type_name(value), len(frame), lambda sink: _write_frame(frame, sink)
        )
    problem = _json_problem(value, "value")
    if problem is None:
        return Encoding(JSON, type_name(value), None, lambda sink: _write_json(value, sink))
    if allow_pickle:
        return Encoding(
            PICKLE, type_name(value), None, lambda sink: pickle.dump(value, sink, protocol=5)
        )
    raise OrbitError(
        E2009_UNSTORABLE_OUTPUT,
        f"a {type_name(value)} cannot be checkpointed as JSON or Parquet ({problem})",
        hint="return a pandas DataFrame or plain None/bool/int/float/str/list/dict values, "
        "or set allow_pickle: true on the io_manager of this job (only if you trust "
        "everyone who can write to the orbit database: unpickling runs code)",
    )


def decode(fmt: str, payload: bytearray, *, allow_pickle: bool) -> Any:
    """Turn stored bytes back into the value. May empty ``payload`` to free its memory early."""
    if fmt == JSON:
        return json.loads(payload)
    if fmt == PARQUET:
        return _read_frame(payload)
    if fmt == PICKLE:
        if not allow_pickle:
            raise OrbitError(
                E2009_UNSTORABLE_OUTPUT,
                "this output was stored with pickle, and allow_pickle is off for this job",
                hint="set allow_pickle: true on the io_manager of this job to load it "
                "(unpickling runs code: only for data you trust)",
            )
        return pickle.loads(payload)  # opt-in, see the check above
    raise ValueError(f"unknown stored output format {fmt!r}")


# --- JSON -------------------------------------------------------------------------------


def _json_problem(value: object, path: str) -> str | None:
    """Why JSON would not give ``value`` back exactly, or None when it would."""
    if value is None or type(value) in (bool, int, str):
        return None
    if type(value) is float:
        # json writes NaN/Infinity (a Python extension); we are the only reader.
        return None
    if type(value) is list:
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"{path} has a {type(key).__name__} key {key!r}; JSON keys are strings"
            problem = _json_problem(item, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    return f"{path} is a {type_name(value)}"


def _write_json(value: object, sink: IO[bytes]) -> None:
    sink.write(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


# --- Parquet ----------------------------------------------------------------------------


def _check_frame(frame: pd.DataFrame) -> None:
    names = list(frame.columns)
    if len(set(map(repr, names))) != len(names):
        raise OrbitError(
            E2009_UNSTORABLE_OUTPUT,
            "the DataFrame has duplicate column names; Parquet cannot store them",
            hint="rename the columns so each name is unique",
        )
    if isinstance(frame.columns, pd.MultiIndex):
        return
    if any(not isinstance(name, str) for name in names):
        raise OrbitError(
            E2009_UNSTORABLE_OUTPUT,
            "the DataFrame has non-string column names, which come back as strings from Parquet",
            hint="name the columns with strings (df.columns = df.columns.astype(str))",
        )


def _dtype_fixups(frame: pd.DataFrame) -> dict[str, Any]:
    """What Arrow forgets, keyed by column position, to restore on load."""
    columns: dict[str, dict[str, Any]] = {}
    for position, dtype in enumerate(frame.dtypes):
        if pd.api.types.is_object_dtype(dtype):
            columns[str(position)] = {"kind": "object"}
        elif isinstance(dtype, pd.StringDtype):
            na = "nan" if dtype.na_value is not pd.NA else "NA"
            columns[str(position)] = {"kind": "string", "storage": dtype.storage, "na": na}
        elif isinstance(dtype, pd.CategoricalDtype) and not pd.api.types.is_string_dtype(
            dtype.categories.dtype
        ):
            # Parquet keeps dictionaries of strings only: other categoricals come back as
            # their plain values, so keep the categories (in order) to rebuild the dtype.
            categories = dtype.categories.tolist()
            if _json_problem(categories, "categories") is not None:
                raise OrbitError(
                    E2009_UNSTORABLE_OUTPUT,
                    f"categorical column {frame.columns[position]!r} has "
                    f"{dtype.categories.dtype} categories, which Parquet cannot keep",
                    hint="use string or numeric categories, or set allow_pickle: true",
                )
            columns[str(position)] = {
                "kind": "categorical",
                "categories": categories,
                "categories_dtype": str(dtype.categories.dtype),
                "ordered": bool(dtype.ordered),
            }
    freq = getattr(frame.index, "freqstr", None)
    return {"columns": columns, "index_freq": freq}


def _bad_column(frame: pd.DataFrame) -> object:
    """The first column Arrow cannot convert (for the error message)."""
    for position, name in enumerate(frame.columns):
        try:
            pa.Schema.from_pandas(frame.iloc[:, [position]], preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return name
    return "(the index)"


def _rows_per_slice(frame: pd.DataFrame) -> int:
    if len(frame) == 0:
        return 1
    bytes_per_row = max(1, int(frame.memory_usage(deep=False, index=True).sum()) // len(frame))
    return max(1, _ROWS_PER_SLICE_TARGET_BYTES // bytes_per_row)


def _write_frame(frame: pd.DataFrame, sink: IO[bytes]) -> None:
    """Stream ``frame`` as Parquet into ``sink``, one Arrow slice (row group) at a time."""
    # A RangeIndex is stored as metadata (start/stop/step) of the *whole* frame; other
    # indexes become columns. The schema, with its pandas metadata, is taken from the whole
    # frame, so slices never record their own partial range.
    preserve = None if isinstance(frame.index, pd.RangeIndex) else True
    step = _rows_per_slice(frame)
    try:
        schema = pa.Schema.from_pandas(frame, preserve_index=preserve)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise OrbitError(
            E2009_UNSTORABLE_OUTPUT,
            f"the DataFrame cannot be stored as Parquet: column {_bad_column(frame)!r}: {error}",
            hint="give each object column values of one type (e.g. .astype('str')), "
            "or set allow_pickle: true",
        ) from None
    fixups = json.dumps(_dtype_fixups(frame)).encode("utf-8")
    schema = schema.with_metadata({**(schema.metadata or {}), _ORBIT_META_KEY: fixups})
    # The schema of the whole frame, so that every slice converts to the same Arrow types
    # (a slice whose object column is all None would otherwise become type null).
    # pyarrow cannot match a schema to MultiIndex columns; those slices infer their own.
    slice_schema = None if isinstance(frame.columns, pd.MultiIndex) else schema
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for start in range(0, max(len(frame), 1), step):
            part = frame.iloc[start : start + step]
            table = pa.Table.from_pandas(part, schema=slice_schema, preserve_index=preserve)
            writer.write_table(table)
            del table, part


def _table_to_frame(holder: list[pa.Table]) -> pd.DataFrame:
    """Convert column by column, dropping each Arrow column once pandas has its copy.

    ``Table.to_pandas(self_destruct=True)`` frees too little in practice (measured: the
    table and the frame both exist in full at the peak); converting one column at a time
    and dropping it from the table bounds the overlap to one column. pyarrow rebuilds the
    index and column names of each piece from the pandas metadata; the stored index
    columns are converted once, with the first piece. pandas 3 concatenates along the
    columns without copying the blocks.
    """
    # The table comes in a list that we empty: a caller's reference would keep every
    # column alive until the end.
    table = holder.pop()
    pandas_meta = table.schema.pandas_metadata or {}
    index_columns = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]
    data_columns = [name for name in table.column_names if name not in index_columns]
    if not data_columns:
        return table.to_pandas()
    pieces: list[pd.DataFrame] = []
    for name in data_columns:
        selected = [name, *index_columns] if not pieces else [name]
        piece_table = table.select(selected)
        table = table.drop_columns(selected)
        pieces.append(piece_table.to_pandas(split_blocks=True, self_destruct=True))
        del piece_table
    index = pieces[0].index
    for piece in pieces[1:]:
        piece.index = index
    frame = pd.concat(pieces, axis=1)
    frame.attrs = pieces[0].attrs
    frame.columns.names = pieces[0].columns.names
    return frame


def _read_table_releasing(payload: bytearray) -> pa.Table:
    """Decode the Parquet bytes, then empty ``payload`` so its memory is free for pandas.

    Row group by row group, single-threaded and without pre-buffering: each of those
    would otherwise hold extra copies of compressed pages for the whole file at once.
    """
    buffer = pa.py_buffer(payload)
    parquet = pq.ParquetFile(pa.BufferReader(buffer), pre_buffer=False)
    groups = [parquet.read_row_group(i, use_threads=False) for i in range(parquet.num_row_groups)]
    table = pa.concat_tables(groups) if groups else parquet.schema_arrow.empty_table()
    del parquet, buffer, groups
    try:
        payload.clear()
    except BufferError:
        pass  # an Arrow array still points into the payload (zero-copy page): keep it
    return table


def _read_frame(payload: bytearray) -> pd.DataFrame:
    schema = pq.read_schema(pa.BufferReader(pa.py_buffer(payload)))
    raw = (schema.metadata or {}).get(_ORBIT_META_KEY)
    fixups = json.loads(raw) if raw else {"columns": {}, "index_freq": None}
    frame = _table_to_frame([_read_table_releasing(payload)])
    for position, fix in fixups["columns"].items():
        index = int(position)
        column = frame.iloc[:, index]
        restored: Any
        if fix["kind"] == "object" and column.dtype != object:
            restored = column.astype(object).where(column.notna(), None)
        elif fix["kind"] == "string":
            na_value = pd.NA if fix["na"] == "NA" else float("nan")
            dtype = pd.StringDtype(fix["storage"], na_value=na_value)
            if column.dtype == dtype:
                continue
            restored = column.astype(dtype)
        elif fix["kind"] == "categorical" and not isinstance(column.dtype, pd.CategoricalDtype):
            categories = pd.Index(fix["categories"], dtype=fix["categories_dtype"])
            restored = column.astype(pd.CategoricalDtype(categories, ordered=fix["ordered"]))
        else:
            continue
        frame.isetitem(index, restored)
    freq = fixups.get("index_freq")
    if freq and isinstance(frame.index, pd.DatetimeIndex | pd.TimedeltaIndex):
        frame.index.freq = freq  # type: ignore[misc]  # settable at runtime
    return frame
