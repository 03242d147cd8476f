"""How recorded values (effect results, emitted row results) survive a trip through jsonb.

Plain JSON values are stored as they are. Values JSON cannot hold exactly are stored as a
tagged object ``{"$orbit": TYPE, "v": ...}`` and come back as the same type:

| Python value | stored as |
|---|---|
| ``Decimal`` | ``{"$orbit": "decimal", "v": "9.99"}`` |
| ``datetime`` / ``date`` / ``time`` | ``{"$orbit": "datetime" / "date" / "time", "v": isoformat}`` |
| ``timedelta`` | ``{"$orbit": "timedelta", "v": [days, seconds, microseconds]}`` |
| ``UUID`` | ``{"$orbit": "uuid", "v": "..."}`` |
| ``bytes`` | ``{"$orbit": "bytes", "v": base64}`` |
| NaN, inf, -inf | ``{"$orbit": "float", "v": "nan" / "inf" / "-inf"}`` |
| numpy scalar | ``{"$orbit": "numpy", "dtype": "int64", "v": 5}`` (datetime64 as its text) |
| ``pandas.Timestamp`` | ``{"$orbit": "pandas_timestamp", "v": isoformat with nanoseconds}`` |
| ``tuple`` / ``set`` / ``frozenset`` | ``{"$orbit": "tuple" / "set" / "frozenset", "v": [...]}`` |
| a str with NUL or a lone surrogate | ``{"$orbit": "str", "v": base64 of its UTF-8 (surrogatepass)}`` |
| a dict with non-str keys or a ``"$orbit"`` key | ``{"$orbit": "dict", "v": [[k, v], ...]}`` |

Anything else (a cursor, an open file, a custom class) raises ``UnrecordableValue``: it
cannot come back after a crash, so it is refused instead of being stored as null.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import uuid
from decimal import Decimal
from typing import Any

TAG = "$orbit"


class UnrecordableValue(TypeError):
    """A value the codec cannot store so that it comes back unchanged."""


def _tag(kind: str, value: Any) -> dict[str, Any]:
    return {TAG: kind, "v": value}


def _needs_escape(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def to_plain(value: Any) -> Any:
    """``value`` as plain JSON types (tagging what JSON cannot hold)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        if _needs_escape(value):
            raw = value.encode("utf-8", "surrogatepass")
            return _tag("str", base64.b64encode(raw).decode())
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _tag("float", repr(value))
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not _needs_escape(k) for k in value) and TAG not in value:
            return {k: to_plain(v) for k, v in value.items()}
        return _tag("dict", [[to_plain(k), to_plain(v)] for k, v in value.items()])
    return _to_plain_other(value)


def _to_plain_other(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _tag("decimal", str(value))
    if type(value).__name__ == "Timestamp" and type(value).__module__.startswith("pandas"):
        return _tag("pandas_timestamp", value.isoformat())  # keeps nanoseconds
    if isinstance(value, dt.datetime):
        return _tag("datetime", value.isoformat())
    if isinstance(value, dt.date):
        return _tag("date", value.isoformat())
    if isinstance(value, dt.time):
        return _tag("time", value.isoformat())
    if isinstance(value, dt.timedelta):
        return _tag("timedelta", [value.days, value.seconds, value.microseconds])
    if isinstance(value, uuid.UUID):
        return _tag("uuid", str(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return _tag("bytes", base64.b64encode(bytes(value)).decode())
    if isinstance(value, tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return _tag(type(value).__name__, [to_plain(v) for v in items])
    if type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.shape == ():
        if value.dtype.kind in "mM":  # datetime64 / timedelta64: .item() may drop ns
            return {TAG: "numpy", "dtype": str(value.dtype), "v": str(value)}
        item = value.item()
        return {TAG: "numpy", "dtype": str(value.dtype), "v": to_plain(item)}
    raise UnrecordableValue(
        f"a {type(value).__module__}.{type(value).__qualname__} cannot be recorded "
        "(use JSON types, Decimal, datetime, UUID, bytes, tuples or numpy scalars)"
    )


def encode(value: Any) -> str:
    """JSON text for a jsonb column; raises ``UnrecordableValue``.

    Always through ``to_plain``: ``json.dumps`` alone would turn a dict's int keys into
    strings (``{1: 3}`` back as ``{"1": 3}``, and ``{1: a, "1": b}`` into one key).
    """
    return json.dumps(to_plain(value), allow_nan=False)


def from_plain(value: Any) -> Any:
    """The inverse of ``to_plain`` (applied to what jsonb gives back)."""
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(TAG)
    if kind is None:
        return {k: from_plain(v) for k, v in value.items()}
    raw = value.get("v")
    return _DECODERS[kind](raw, value)


def _numpy(raw: Any, whole: dict[str, Any]) -> Any:
    import numpy as np

    dtype = np.dtype(whole["dtype"])
    unit: Any = np.datetime_data(dtype)[0] if dtype.kind in "mM" else None
    if dtype.kind == "M":
        return np.datetime64(raw, unit)
    if dtype.kind == "m":
        count = raw.split()[0]
        return np.timedelta64("NaT" if count == "NaT" else int(count), unit)
    return dtype.type(from_plain(raw))


def _pandas_timestamp(raw: Any, whole: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.Timestamp(raw)


_DECODERS: dict[str, Any] = {
    "str": lambda raw, _w: base64.b64decode(raw).decode("utf-8", "surrogatepass"),
    "float": lambda raw, _w: float(raw),
    "dict": lambda raw, _w: {from_plain(k): from_plain(v) for k, v in raw},
    "decimal": lambda raw, _w: Decimal(raw),
    "datetime": lambda raw, _w: dt.datetime.fromisoformat(raw),
    "date": lambda raw, _w: dt.date.fromisoformat(raw),
    "time": lambda raw, _w: dt.time.fromisoformat(raw),
    "timedelta": lambda raw, _w: dt.timedelta(days=raw[0], seconds=raw[1], microseconds=raw[2]),
    "uuid": lambda raw, _w: uuid.UUID(raw),
    "bytes": lambda raw, _w: base64.b64decode(raw),
    "tuple": lambda raw, _w: tuple(from_plain(v) for v in raw),
    "set": lambda raw, _w: {from_plain(v) for v in raw},
    "frozenset": lambda raw, _w: frozenset(from_plain(v) for v in raw),
    "numpy": _numpy,
    "pandas_timestamp": _pandas_timestamp,
}


def decode(value: Any) -> Any:
    """A recorded value as the caller first gave it (``value`` as psycopg read the jsonb)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return from_plain(value)


def safe_text(text: str, limit: int = 4000) -> str:
    """``text`` fit for a Postgres text column: NUL and lone surrogates escaped, bounded."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 1] + "…"
