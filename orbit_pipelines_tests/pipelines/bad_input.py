"""The bad-input cases every example job is tested on: file, expected good ids, expected rejects."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterEvent

from orbit_pipelines.pipelines.orders_input import REQUIRED_COLUMNS

CORPUS = Path(__file__).parent / "corpus"


@dataclass(frozen=True)
class BadInput:
    """A corpus file and what a job must make of it."""

    name: str
    good_ids: tuple[str, ...]
    rejects: tuple[tuple[int, str], ...]  # (line, code)
    file_error: str | None = None  # a whole-file error code: the job fails, writes nothing


ROW_CASES = (
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


def failure_text(events: list[DagsterEvent]) -> str:
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
