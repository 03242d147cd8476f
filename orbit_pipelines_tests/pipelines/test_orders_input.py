"""The orders CSV reader on the bad-input corpus: each problem gets its code, good rows stay."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from orbit_examples.pipelines.orders_input import (
    FIELD_LIMIT_BYTES,
    RAW_TEXT_LIMIT,
    REQUIRED_COLUMNS,
    Order,
    read_orders,
)
from orbit_examples.pipelines.sample_data import BAD_ROW_CODES, write_orders_csv
from orbit_pipelines.errors import OrbitError

CORPUS = Path(__file__).parent / "corpus"


def ids(orders: list[Order]) -> list[str]:
    return [order.order_id for order in orders]


def test_missing_column_rejects_the_whole_file_naming_the_column() -> None:
    with pytest.raises(OrbitError) as caught:
        read_orders(CORPUS / "missing_column.csv")
    assert caught.value.code == "E-1002"
    assert "region" in caught.value.message
    assert "nothing was loaded" in caught.value.message


def test_empty_file_is_a_clear_error_but_header_only_is_zero_orders() -> None:
    with pytest.raises(OrbitError) as caught:
        read_orders(CORPUS / "empty.csv")
    assert caught.value.code == "E-1005"
    assert "empty" in caught.value.message

    parsed = read_orders(CORPUS / "header_only.csv")
    assert parsed.orders == [] and parsed.rejects == []


def test_non_numeric_quantity_quarantines_that_row_only() -> None:
    parsed = read_orders(CORPUS / "non_numeric_quantity.csv")
    assert ids(parsed.orders) == ["O-1", "O-3"]
    [reject] = parsed.rejects
    assert (reject.code, reject.line, reject.order_id) == ("E-1003", 3, "O-2")
    assert "quantity 'lots' of item 2 (B-200)" in reject.reason
    assert "B-200:lots:5.00" in reject.raw


def test_duplicated_order_id_keeps_the_first_and_quarantines_the_second() -> None:
    parsed = read_orders(CORPUS / "duplicate_order_id.csv")
    assert ids(parsed.orders) == ["O-1", "O-2", "O-3"]
    assert parsed.orders[0].customer == "Ann"
    [reject] = parsed.rejects
    assert (reject.code, reject.line, reject.order_id) == ("E-1004", 4, "O-1")
    assert "already appears on line 2" in reject.reason


def test_non_utf8_bytes_quarantine_their_row_even_across_a_quoted_newline() -> None:
    parsed = read_orders(CORPUS / "non_utf8.csv")
    assert ids(parsed.orders) == ["O-1", "O-3"]
    # O-3 starts on line 5 because O-2's quoted address spans lines 3-4.
    assert parsed.orders[1].line == 5
    [reject] = parsed.rejects
    assert (reject.code, reject.line, reject.order_id) == ("E-1006", 3, "O-2")
    assert "not valid UTF-8" in reject.reason
    assert "Jos\\xe9" in reject.raw and "\\xff\\xfe" in reject.raw


def test_broken_quoting_quarantines_the_row_and_reading_continues() -> None:
    parsed = read_orders(CORPUS / "broken_quoting.csv")
    assert ids(parsed.orders) == ["O-1", "O-3"]
    [reject] = parsed.rejects
    assert (reject.code, reject.line) == ("E-1001", 3)
    assert "quoting" in reject.reason
    assert '"Bob "quoted" badly' in reject.raw


def test_a_10mb_field_is_quarantined_without_crashing_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "huge_field.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(REQUIRED_COLUMNS)
        writer.writerow(["O-1", "Ann", "1 Main St", "EU-WEST", "2026-11-01", "A-100:1:9.99"])
        writer.writerow(["O-2", "x" * 10_000_000, "2 Main", "EU-WEST", "2026-11-01", "A-100:1:1"])
        writer.writerow(["O-3", "Cid", "3 Main St", "US-EAST", "2026-11-02", "B-200:3:5.00"])

    parsed = read_orders(path)

    assert ids(parsed.orders) == ["O-1", "O-3"]
    [reject] = parsed.rejects
    assert (reject.code, reject.line, reject.order_id) == ("E-1007", 3, "O-2")
    assert f"over the {FIELD_LIMIT_BYTES} byte limit" in reject.reason
    assert "10000000 bytes" in reject.reason
    # The stored raw text is truncated, and says how long the row really was.
    assert len(reject.raw) < RAW_TEXT_LIMIT + 100
    assert "characters in all" in reject.raw


def test_field_just_under_the_limit_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "big_ok.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(REQUIRED_COLUMNS)
        writer.writerow(["O-1", "y" * FIELD_LIMIT_BYTES, "1", "EU", "2026-11-01", "A:1:1"])
    assert ids(read_orders(path).orders) == ["O-1"]


@pytest.mark.parametrize(
    ("items", "fragment"),
    [
        ("A-100:0:1.00", "quantity '0'"),
        ("A-100:-2:1.00", "quantity '-2'"),
        ("A-100:1.5:1.00", "quantity '1.5'"),
        ("A-100:1:free", "unit_price 'free'"),
        ("A-100:1:-3", "unit_price '-3'"),
        ("A-100:1:NaN", "unit_price 'NaN'"),
        ("A-100:1", "not sku:quantity:unit_price"),
        ("A-100:1:1.00|", "item 2"),
    ],
)
def test_invalid_items_are_e1003_with_the_offending_value(
    tmp_path: Path, items: str, fragment: str
) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        ",".join(REQUIRED_COLUMNS) + "\n"
        f"O-1,Ann,1 Main,EU,2026-11-01,{items}\n"
        "O-2,Bob,2 Main,EU,2026-11-01,B:2:2.50\n"
    )
    parsed = read_orders(path)
    assert ids(parsed.orders) == ["O-2"]
    [reject] = parsed.rejects
    assert reject.code == "E-1003" and fragment in reject.reason


def test_wrong_field_count_empty_value_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text(
        "\ufeff" + ",".join(REQUIRED_COLUMNS) + ",note\r\n"
        "O-1,Ann,1 Main,EU,2026-11-01,A:1:1,hello\r\n"
        "\r\n"
        "O-2,Bob,2 Main,EU,2026-11-01\r\n"
        "O-3,,3 Main,EU,2026-11-01,A:1:1,\r\n"
        "O-4,Dee,4 Main,EU,2026-11-01,A:1:1,\r\n"
    )
    parsed = read_orders(path)
    # The BOM is not part of the first column's name; extra columns are ignored.
    assert ids(parsed.orders) == ["O-1", "O-4"]
    assert [(r.line, r.code) for r in parsed.rejects] == [(4, "E-1001"), (5, "E-1003")]
    assert "customer is empty" in parsed.rejects[1].reason


def test_generated_sample_with_bad_rows_keeps_every_valid_order(tmp_path: Path) -> None:
    path = write_orders_csv(tmp_path / "sample.csv", 200, bad_rows=True)
    parsed = read_orders(path)
    assert ids(parsed.orders) == [f"O-{n:06d}" for n in range(1, 201)]
    assert sorted(r.code for r in parsed.rejects) == sorted(BAD_ROW_CODES)
    assert parsed.rows_seen == 204
    # Same seed, same bytes: demos and tests can rely on the content.
    again = write_orders_csv(tmp_path / "again.csv", 200, bad_rows=True)
    assert again.read_bytes() == path.read_bytes()
