"""The one rule that turns a row's key into the ledger's 16-byte key.

- A string is itself: its UTF-8 bytes are hashed, so string-keyed ledgers written before
  this rule still resume.
- Integers are one logical key whatever type carries them: ``1``, ``numpy.int64(1)``,
  ``1.0`` (an int column re-read as float because it has a missing value) and
  ``Decimal("1")`` all hash alike, and never like the string ``"1"``: every non-string
  key is hashed with a type tag that starts with a NUL byte, which no valid string key
  can contain.
- Other numbers, booleans, dates, bytes and tuples (composite keys) are tagged by type.
  A UUID is its string form, so it matches the same id read back from text.
- Missing (None, NaN, pandas NA/NaT, "") is a row error (E-1013); a string holding a NUL
  or a lone surrogate, or a type with no stable form (dict, list, object), is E-1014.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from hashlib import blake2b
from typing import Any, NamedTuple

from orbit_pipelines.errors import E1013_KEY_MISSING, E1014_KEY_UNUSABLE, OrbitError
from orbit_pipelines.store.value_codec import safe_text

_TAG = "\x00"


class RowKey(NamedTuple):
    """A key as stored and shown (``display``) and as the ledger indexes it (``digest``)."""

    display: str
    digest: bytes


class RowKeyError(OrbitError):
    """The row's key is missing or unusable: a fault of the row, never of the step."""

    def __init__(self, code: Any, message: str, display: str) -> None:
        super().__init__(code, message)
        self.display = display


def printable(value: Any) -> str:
    """A form of any key safe to store in a text column and show to a person."""
    return safe_text(value if isinstance(value, str) else repr(value), limit=200)


def _is_missing(value: Any) -> bool:
    if value is None or (isinstance(value, str) and value == ""):
        return True
    if isinstance(value, Decimal):
        return value.is_nan()  # quiet and signalling NaN; comparing an sNaN would raise
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        try:
            return bool(value != value)  # NaN of any float width (Python, numpy 16/32/64)
        except (TypeError, ValueError):
            return False
    # pandas NA / NaT without importing pandas here: both are their own types.
    return type(value).__name__ in ("NAType", "NaTType")


def _tagged(value: Any) -> tuple[str, str]:
    """(display, hash text) of a key that is valid; raises RowKeyError otherwise."""
    if _is_missing(value):
        raise RowKeyError(E1013_KEY_MISSING, f"row key is missing ({value!r})", printable(value))
    if isinstance(value, str):
        if "\x00" in value:
            raise RowKeyError(E1014_KEY_UNUSABLE, "row key contains a NUL byte", printable(value))
        return value, value
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        text = "true" if value else "false"
        return str(bool(value)), f"{_TAG}b:{text}"
    if isinstance(value, uuid.UUID):
        return str(value), str(value)
    integral = _as_integer(value)
    if integral is not None:
        return str(integral), f"{_TAG}i:{integral}"
    if isinstance(value, Decimal):
        # Equal to a float exactly: the same key as that float; else its own exact digits.
        if Decimal(float(value)) == value:
            return repr(float(value)), f"{_TAG}f:{float(value)!r}"
        text = str(value.normalize())
        return text, f"{_TAG}d:{text}"
    if isinstance(value, float) or type(value).__module__ == "numpy":
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
        if number is not None:
            return repr(number), f"{_TAG}f:{number!r}"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat(), f"{_TAG}t:{value.isoformat()}"
    if isinstance(value, bytes):
        return value.hex(), f"{_TAG}x:{value.hex()}"
    if isinstance(value, tuple):
        parts = [_tagged(v) for v in value]
        display = "(" + ", ".join(d for d, _ in parts) + ")"
        # Length-prefixed parts: no separator inside a part can shift the boundaries.
        return display, f"{_TAG}(" + "".join(f"{len(h)}:{h}" for _, h in parts) + ")"
    raise RowKeyError(
        E1014_KEY_UNUSABLE,
        f"row key of type {type(value).__name__} has no stable form; use a str, int or tuple",
        printable(value),
    )


def _as_integer(value: Any) -> int | None:
    if isinstance(value, int):
        return int(value)
    if type(value).__module__ == "numpy":
        if type(value).__name__.startswith(("int", "uint")):
            return int(value)
        if type(value).__name__.startswith("float"):
            value = float(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return None


def canonical_key(value: Any) -> RowKey:
    """The row key of ``value``; raises ``RowKeyError`` (E-1013 / E-1014) for a bad one."""
    display, hashed = _tagged(value)
    try:
        data = hashed.encode("utf-8")
    except UnicodeEncodeError:
        raise RowKeyError(
            E1014_KEY_UNUSABLE, "row key holds a lone surrogate (not valid text)", printable(value)
        ) from None
    return RowKey(display, blake2b(data, digest_size=16).digest())


def batch_keys(values: list[Any]) -> tuple[list[str], list[bytes]] | None:
    """(display forms, digests) of a batch of keys that are all plain ``str`` or all plain
    ``int`` (a key column's usual shape), by exactly the rule of ``canonical_key``; None when
    the batch holds anything else or a key that rule refuses (missing, NUL, lone
    surrogate, an int too long to render), for the caller to take it key by key and name
    the bad ones. One dispatch per batch instead of per key: what is left per key is the
    digest itself."""
    kinds = set(map(type, values))
    if kinds == {str}:
        if not all(values) or "\x00" in "".join(values):
            return None
        try:
            data = list(map(str.encode, values))
        except UnicodeEncodeError:
            return None
        return values, [_digest(d, digest_size=16).digest() for d in data]
    if kinds == {int}:  # bool is its own type, so never here
        try:
            displays = list(map(str, values))
        except ValueError:  # past the interpreter's int-to-text digit limit
            return None
        return displays, [_digest(_INT_TAG + s.encode(), digest_size=16).digest() for s in displays]
    return None


_digest = blake2b
_INT_TAG = f"{_TAG}i:".encode()


def row_key_hash(value: Any) -> bytes:
    """The 16-byte ledger digest of a key (see ``canonical_key``)."""
    return canonical_key(value).digest
