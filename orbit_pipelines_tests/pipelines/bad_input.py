"""The bad-input cases every example job is tested on: file, expected good ids, expected rejects.

Issue 7's list, and where each is: a CSV with a missing column (``missing_column.csv``: the
header lacks one, E-1002 for the whole file; ``missing_field.csv``: one row lacks a field,
E-1001 for that row), a non-numeric quantity (E-1003), an empty file (E-1005), a 10 MB field
(E-1007), a duplicated order id (E-1004), non-UTF-8 bytes (E-1006); plus broken quoting.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterEvent
from sqlalchemy import Engine, inspect, select

from orbit_examples.pipelines import example_tables as t
from orbit_examples.pipelines.orders_input import REQUIRED_COLUMNS

CORPUS = Path(__file__).parent / "corpus"


@dataclass(frozen=True)
class BadInput:
    """A corpus file and what a job must make of it."""

    name: str
    good_ids: tuple[str, ...]
    rejects: tuple[tuple[int, str], ...]  # (line, code)
    file_error: str | None = None  # a whole-file error code: the job fails, writes nothing


ROW_CASES = (
    BadInput("missing_field.csv", ("O-1", "O-3"), ((3, "E-1001"),)),
    BadInput("non_numeric_quantity.csv", ("O-1", "O-3"), ((3, "E-1003"),)),
    BadInput("duplicate_order_id.csv", ("O-1", "O-2", "O-3"), ((4, "E-1004"),)),
    BadInput("non_utf8.csv", ("O-1", "O-3"), ((3, "E-1006"),)),
    BadInput("broken_quoting.csv", ("O-1", "O-3"), ((3, "E-1001"),)),
    BadInput("huge_field.csv", ("O-1", "O-3"), ((3, "E-1007"),)),
)
FILE_CASES = (
    BadInput("missing_column.csv", (), (), file_error="E-1002"),
    BadInput("empty.csv", (), (), file_error="E-1005"),
)


def corpus_file(name: str, scratch: Path) -> Path:
    """The corpus file ``name``; ``huge_field.csv`` (a 10 MB field) is generated, not committed."""
    if name != "huge_field.csv":
        return CORPUS / name
    path = scratch / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(REQUIRED_COLUMNS)
        writer.writerow(["O-1", "Ann", "1 Main St", "EU-WEST", "2026-11-01", "A-100:1:9.99"])
        writer.writerow(["O-2", "x" * 10_000_000, "2 Main", "EU-WEST", "2026-11-01", "A-100:1:1"])
        writer.writerow(["O-3", "Cid", "3 Main St", "US-EAST", "2026-11-02", "B-200:3:5.00"])
    return path


def failure_text(events: Sequence[DagsterEvent]) -> str:
    """Every step failure's message, causes included (our OrbitError is the cause)."""
    lines: list[str] = []
    for event in events:
        if not event.is_step_failure or event.step_failure_data is None:
            continue
        error = event.step_failure_data.error
        while error is not None:
            lines.append(error.message)
            error = error.cause
    return "\n".join(lines)


def assert_good_rows_loaded_and_bad_rows_quarantined(engine: Engine, case: BadInput) -> None:
    """Nothing lost: every good order is in ``orbit_examples.orders`` once, every bad row is
    in the quarantine once with its line, its code and a reason a person can act on."""
    with engine.connect() as conn:
        loaded = conn.execute(select(t.orders.c.order_id).order_by(t.orders.c.order_id))
        rejects = conn.execute(
            select(
                t.orders_quarantine.c.line, t.orders_quarantine.c.code, t.orders_quarantine.c.reason
            ).order_by(t.orders_quarantine.c.line)
        ).all()
        assert tuple(loaded.scalars()) == case.good_ids
    assert tuple((r.line, r.code) for r in rejects) == case.rejects
    assert all(r.reason and len(r.reason) > 10 for r in rejects), rejects


def assert_rejected_file(case: BadInput, failure: str, engine: Engine) -> None:
    """A whole-file error: the run failed with the case's code and a reason, nothing written."""
    assert case.file_error is not None and case.file_error in failure, failure
    assert len(failure.split(case.file_error, 1)[1].strip()) > 10, failure
    assert "orbit_examples" not in inspect(engine).get_schema_names()
