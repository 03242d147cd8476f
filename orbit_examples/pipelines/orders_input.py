"""Read an orders CSV robustly: valid orders out, every bad row quarantined with a code.

The orders CSV (UTF-8, comma separated, RFC 4180 quoting, first line is the header)
-----------------------------------------------------------------------------------
One line per order. Required columns, in any order (extra columns are ignored):

============  ======================================================================
order_id      unique key of the order, non-empty (e.g. ``O-000001``)
customer      customer name, non-empty
address       delivery address, non-empty (the carrier validates it further: E-3003)
region        sales region, non-empty (e.g. ``EU-WEST``)
order_date    ISO date ``YYYY-MM-DD``
items         one or more ``sku:quantity:unit_price`` separated by ``|``;
              quantity a whole number >= 1, unit_price a decimal >= 0
              (e.g. ``A-100:2:9.99|B-200:1:24.50``)
============  ======================================================================

``items`` lives in one field, not one line per item, because an order is the unit the
carrier ships and the unit whose key must be unique; ``sales_rollup`` forks it per item.

What happens to bad input
-------------------------
Whole-file problems are raised as ``OrbitError`` before anything is written:

- ``E-1005`` the file is empty (zero bytes, or only blank lines). An empty export is almost
  always an upstream failure, so it is an error a person must look at; a file with only the
  header is a legitimate "no orders today" and yields zero orders.
- ``E-1002`` a required column is missing from the header (every missing column is named).
- ``E-1001`` the header names a column twice.

Row problems quarantine that row and keep going (the other rows are all kept):

- ``E-1006`` the row holds bytes that are not UTF-8 (the file is decoded with
  ``surrogateescape`` so each bad byte is pinned to its own row, quoted newlines included)
- ``E-1007`` a field is larger than ``FIELD_LIMIT_BYTES`` (64 KiB)
- ``E-1001`` the row has a different number of fields than the header, or broken quoting
- ``E-1003`` a value is empty or not of its type (date, quantity, price, items syntax)
- ``E-1004`` the order id was already seen on an earlier line (the first one wins)

This module is pure: no Dagster, no database.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from orbit_examples.errors import (
    E1001_MALFORMED_ROW,
    E1002_MISSING_COLUMN,
    E1004_DUPLICATE_KEY,
    E1005_EMPTY_INPUT,
    E1006_ENCODING,
    E1007_FIELD_TOO_LARGE,
)
from orbit_pipelines.errors import E1003_INVALID_VALUE, ErrorCode, OrbitError

REQUIRED_COLUMNS = ("order_id", "customer", "address", "region", "order_date", "items")
FIELD_LIMIT_BYTES = 64 * 1024
RAW_TEXT_LIMIT = 500
ITEM_SEPARATOR = "|"
ITEM_PART_SEPARATOR = ":"


@dataclass(frozen=True)
class OrderItem:
    """One item of an order."""

    sku: str
    quantity: int
    unit_price: Decimal

    def as_json(self) -> dict[str, Any]:
        """JSON-safe form (price as a string, so no float rounding)."""
        return {"sku": self.sku, "quantity": self.quantity, "unit_price": str(self.unit_price)}


@dataclass(frozen=True)
class Order:
    """A valid order and the line it started on."""

    order_id: str
    customer: str
    address: str
    region: str
    order_date: date
    items: tuple[OrderItem, ...]
    line: int

    def as_json(self) -> dict[str, Any]:
        """JSON-safe form, e.g. for a checkpointed step output."""
        return {
            "order_id": self.order_id,
            "customer": self.customer,
            "address": self.address,
            "region": self.region,
            "order_date": self.order_date.isoformat(),
            "items": [item.as_json() for item in self.items],
            "line": self.line,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Order:
        """Inverse of ``as_json``."""
        return cls(
            order_id=data["order_id"],
            customer=data["customer"],
            address=data["address"],
            region=data["region"],
            order_date=date.fromisoformat(data["order_date"]),
            items=tuple(
                OrderItem(i["sku"], int(i["quantity"]), Decimal(i["unit_price"]))
                for i in data["items"]
            ),
            line=int(data["line"]),
        )


@dataclass(frozen=True)
class RejectedRow:
    """A quarantined input row: where it was, what it said (truncated) and why it was refused."""

    line: int
    raw: str
    code: str
    reason: str
    order_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "line": self.line,
            "raw": self.raw,
            "code": self.code,
            "reason": self.reason,
            "order_id": self.order_id,
        }


@dataclass
class ParsedOrders:
    """What ``read_orders`` found: valid orders, rejects, and the file's identity."""

    source: str
    digest: str
    orders: list[Order] = field(default_factory=list)
    rejects: list[RejectedRow] = field(default_factory=list)

    @property
    def rows_seen(self) -> int:
        """Data rows read (valid + quarantined): nothing is dropped silently."""
        return len(self.orders) + len(self.rejects)


class _RowError(Exception):
    def __init__(self, error: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes: identifies one input, wherever it is stored."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class RawRecord:
    """One CSV record before validation: its text values, or the reason it has none.

    ``values`` maps each required column to its text when the record is well formed
    (right width, UTF-8, fields within the size limit); otherwise it is None and
    ``code``/``reason`` say why.
    """

    line: int
    raw: str
    values: dict[str, str] | None
    code: str | None = None
    reason: str | None = None
    order_id: str | None = None


def read_records(path: str | os.PathLike[str]) -> Iterator[RawRecord]:
    """Stream the records of an orders CSV, checking the header first (E-1005/E-1002/E-1001).

    A generator: the header is checked when the first record is requested, before anything
    is yielded, so a caller that consumes it before writing anything has no side effects
    on a rejected file.
    """
    source = Path(path)
    _allow_large_fields(source.stat().st_size)
    with source.open("rb") as binary:
        # surrogateescape: an invalid byte becomes a lone surrogate in the row it belongs to,
        # so one bad row is quarantined without losing its neighbours or record boundaries.
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
        tap = _LineTap(text)
        reader = csv.reader(tap, strict=True)
        header, header_line = _read_header(reader, source)
        index = {name: position for position, name in enumerate(header)}
        for line, fields, csv_error in _records(reader, tap, header_line):
            raw = raw_text(tap.record)
            try:
                if csv_error is not None:
                    raise _RowError(E1001_MALFORMED_ROW, f"broken CSV quoting: {csv_error}")
                _check_shape(fields, len(header))
            except _RowError as problem:
                yield RawRecord(
                    line=line,
                    raw=raw,
                    values=None,
                    code=problem.error.code,
                    reason=problem.reason,
                    order_id=_order_id_of(fields, index),
                )
                continue
            values = {name: fields[index[name]] for name in REQUIRED_COLUMNS}
            yield RawRecord(line=line, raw=raw, values=values, order_id=values["order_id"].strip())


def read_orders(path: str | os.PathLike[str]) -> ParsedOrders:
    """Read and validate an orders CSV; see the module docstring for the rules."""
    source = Path(path)
    result = ParsedOrders(source=str(source), digest=file_digest(source))
    seen: dict[str, int] = {}
    for record in read_records(source):
        try:
            if record.values is None:
                assert record.code is not None and record.reason is not None
                result.rejects.append(
                    RejectedRow(
                        record.line, record.raw, record.code, record.reason, record.order_id
                    )
                )
                continue
            order = parse_values(record.values, record.line)
            first = seen.get(order.order_id)
            if first is not None:
                raise _RowError(E1004_DUPLICATE_KEY, duplicate_reason(order.order_id, first))
            seen[order.order_id] = record.line
            result.orders.append(order)
        except _RowError as problem:
            result.rejects.append(
                RejectedRow(
                    record.line,
                    record.raw,
                    problem.error.code,
                    problem.reason,
                    record.order_id or None,
                )
            )
    return result


def duplicate_reason(order_id: str, first_line: int) -> str:
    """The E-1004 reason text."""
    return f"order_id {order_id!r} already appears on line {first_line}"


class RowInvalid(Exception):
    """A row that fails validation: ``code`` and ``reason`` go to the quarantine."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


def validate_values(values: dict[str, str], line: int) -> Order:
    """``parse_values`` for callers outside this module: raises ``RowInvalid``."""
    try:
        return parse_values(values, line)
    except _RowError as problem:
        raise RowInvalid(problem.error.code, problem.reason) from None


def raw_text(lines: list[str]) -> str:
    """A record's lines as a person should see them: invalid bytes as ``\\xNN``, truncated."""
    total = sum(len(line) for line in lines)
    head = "".join(lines)[: RAW_TEXT_LIMIT + 1].rstrip("\r\n")
    text = _printable(head)
    if total > RAW_TEXT_LIMIT:
        return text[:RAW_TEXT_LIMIT] + f"... ({total} characters in all)"
    return text


class _LineTap:
    """Feeds lines to the csv reader and keeps those of the record being read."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.record: list[str] = []

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.record.append(line)
        return line


def _printable(value: str) -> str:
    return value.encode("utf-8", errors="surrogateescape").decode(
        "utf-8", errors="backslashreplace"
    )


def _allow_large_fields(size: int) -> None:
    # The csv module refuses fields over its limit (128 KiB) by raising mid-file. Raise the
    # process-wide limit to the file size (never lower it: other readers may rely on it) so
    # the reader always gets through, and enforce our own per-field limit as a row error.
    if csv.field_size_limit() < size + 1:
        csv.field_size_limit(size + 1)


def _read_header(reader: Any, source: Path) -> tuple[list[str], int]:
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                header = [f.strip() for f in fields]
                break
        else:
            raise OrbitError(
                E1005_EMPTY_INPUT,
                f"{source} is empty: no header and no orders",
                hint="an export with no orders still needs its header line",
            )
    except csv.Error as error:
        raise OrbitError(
            E1001_MALFORMED_ROW, f"{source}: cannot read the header line: {error}"
        ) from None
    if any(_has_invalid_bytes(name) for name in header):
        raise OrbitError(E1006_ENCODING, f"{source}: the header line is not valid UTF-8")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise OrbitError(
            E1001_MALFORMED_ROW, f"{source}: the header names {', '.join(duplicated)} twice"
        )
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise OrbitError(
            E1002_MISSING_COLUMN,
            f"{source} is missing required column(s) {', '.join(missing)}; nothing was loaded",
            hint=f"the header must name {', '.join(REQUIRED_COLUMNS)}",
        )
    return header, int(reader.line_num)


def _records(
    reader: Any, tap: _LineTap, last_line: int
) -> Iterator[tuple[int, list[str], str | None]]:
    """Yield (first physical line, fields, csv error) per record; blank records are skipped."""
    while True:
        start = last_line + 1
        tap.record = []
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            # strict mode stops at the first bad quote; report the record and resume on the
            # next physical line (the csv reader restarts its state on each next()).
            last_line = int(reader.line_num)
            yield start, [], str(error)
            continue
        last_line = int(reader.line_num)
        if not any(f.strip() for f in fields):
            continue  # blank lines are layout, not data
        yield start, fields, None


def _check_shape(fields: list[str], width: int) -> None:
    for position, value in enumerate(fields):
        if len(value) > FIELD_LIMIT_BYTES // 4 and len(_encoded(value)) > FIELD_LIMIT_BYTES:
            raise _RowError(
                E1007_FIELD_TOO_LARGE,
                f"field {position + 1} is {len(_encoded(value))} bytes, over the "
                f"{FIELD_LIMIT_BYTES} byte limit",
            )
    if any(_has_invalid_bytes(value) for value in fields):
        raise _RowError(E1006_ENCODING, "the row contains bytes that are not valid UTF-8")
    if len(fields) != width:
        raise _RowError(
            E1001_MALFORMED_ROW, f"the row has {len(fields)} fields, the header has {width}"
        )


def parse_values(values: dict[str, str], line: int) -> Order:
    """Validate one record's text values into an ``Order`` (E-1003 on a bad value)."""

    def required(name: str) -> str:
        value = values[name].strip()
        if not value:
            raise _RowError(E1003_INVALID_VALUE, f"{name} is empty")
        return value

    order_id = required("order_id")
    raw_date = required("order_date")
    try:
        order_date = date.fromisoformat(raw_date)
    except ValueError:
        raise _RowError(
            E1003_INVALID_VALUE, f"order_date {raw_date!r} is not a date (YYYY-MM-DD)"
        ) from None
    return Order(
        order_id=order_id,
        customer=required("customer"),
        address=required("address"),
        region=required("region"),
        order_date=order_date,
        items=parse_items(required("items")),
        line=line,
    )


def parse_items(raw: str) -> tuple[OrderItem, ...]:
    """Parse ``sku:quantity:unit_price|...``; raise a row error naming the bad item."""
    items: list[OrderItem] = []
    for number, entry in enumerate(raw.split(ITEM_SEPARATOR), start=1):
        parts = [part.strip() for part in entry.split(ITEM_PART_SEPARATOR)]
        if len(parts) != 3 or not parts[0]:
            raise _RowError(
                E1003_INVALID_VALUE,
                f"item {number} {entry.strip()!r} is not sku:quantity:unit_price",
            )
        sku, raw_quantity, raw_price = parts
        if not raw_quantity.isdecimal() or int(raw_quantity) < 1:
            raise _RowError(
                E1003_INVALID_VALUE,
                f"quantity {raw_quantity!r} of item {number} ({sku}) is not a whole number >= 1",
            )
        try:
            price = Decimal(raw_price)
        except InvalidOperation:
            price = Decimal("NaN")
        if not price.is_finite() or price < 0:
            raise _RowError(
                E1003_INVALID_VALUE,
                f"unit_price {raw_price!r} of item {number} ({sku}) is not a decimal >= 0",
            )
        items.append(OrderItem(sku=sku, quantity=int(raw_quantity), unit_price=price))
    return tuple(items)


def _encoded(value: str) -> bytes:
    return value.encode("utf-8", errors="surrogateescape")


def _has_invalid_bytes(value: str) -> bool:
    # surrogateescape maps each undecodable byte to U+DC80..U+DCFF; valid text never has them.
    return any("\udc80" <= char <= "\udcff" for char in value)


def _order_id_of(fields: list[str], index: dict[str, int]) -> str | None:
    position = index.get("order_id")
    if position is None or position >= len(fields):
        return None
    value = fields[position].strip()
    if not value or len(value) > 200 or _has_invalid_bytes(value):
        return None
    return value
