"""Deterministic demo/test orders CSVs (same seed, same bytes), optionally with bad rows.

``python -m orbit_examples.pipelines.sample_data OUT.csv --orders 1000 --bad-rows``
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from orbit_examples.pipelines.orders_input import REQUIRED_COLUMNS

REGIONS = ("EU-WEST", "EU-NORTH", "US-EAST", "US-WEST", "APAC")
SKUS = ("A-100", "A-200", "B-100", "B-300", "C-150", "D-010")
STREETS = ("Main St", "High St", "Station Rd", "Church Ln", "Mill Rd", "Park Ave")
NAMES = ("Ada", "Grace", "Linus", "Barbara", "Edsger", "Frances", "Ken", "Radia")
FIRST_DAY = date(2026, 11, 1)

# Bad rows appended by ``bad_rows=True``, one per rule, with the code each must get.
BAD_ROW_CODES = ("E-1003", "E-1004", "E-1006", "E-1003")


def order_id(number: int) -> str:
    """The id of the ``number``-th generated order (1-based)."""
    return f"O-{number:06d}"


def _order_row(rng: random.Random, number: int) -> list[str]:
    items = "|".join(
        f"{rng.choice(SKUS)}:{rng.randint(1, 5)}:{rng.randint(100, 9999) / 100:.2f}"
        for _ in range(rng.randint(1, 3))
    )
    return [
        order_id(number),
        f"{rng.choice(NAMES)} {number}",
        f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
        rng.choice(REGIONS),
        (FIRST_DAY + timedelta(days=rng.randint(0, 6))).isoformat(),
        items,
    ]


def write_orders_csv(
    path: str | Path, n_orders: int, *, seed: int = 7, bad_rows: bool = False
) -> Path:
    """Write ``n_orders`` valid orders (ids ``O-000001``...) and, if asked, four bad rows.

    The bad rows are: a non-numeric quantity (E-1003), a duplicate of order 1 (E-1004),
    a customer name with bytes that are not UTF-8 (E-1006) and a date that is not a date
    (E-1003). Valid orders are always exactly ``n_orders``.
    """
    target = Path(path)
    rng = random.Random(seed)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(REQUIRED_COLUMNS)
        for number in range(1, n_orders + 1):
            writer.writerow(_order_row(rng, number))
        if bad_rows:
            writer.writerow(
                [
                    order_id(n_orders + 1),
                    "Bad Qty",
                    "1 Main St",
                    "EU-WEST",
                    "2026-11-02",
                    "A-100:two:1.00",
                ]
            )
            writer.writerow(
                [order_id(1), "Dup", "2 Main St", "EU-WEST", "2026-11-02", "A-100:1:1.00"]
            )
    if bad_rows:
        with target.open("ab") as raw:
            raw.write(
                f"{order_id(n_orders + 2)},Caf\xe9,3 Main St,EU-WEST,2026-11-02,A-100:1:1.00\r\n".encode(
                    "latin-1"
                )
            )
        with target.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(
                [
                    order_id(n_orders + 3),
                    "Bad Date",
                    "4 Main St",
                    "EU-WEST",
                    "yesterday",
                    "A-100:1:1.00",
                ]
            )
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write a sample CSV."""
    parser = argparse.ArgumentParser(description="Write a deterministic orders CSV.")
    parser.add_argument("path", type=Path)
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bad-rows", action="store_true")
    args = parser.parse_args(argv)
    write_orders_csv(args.path, args.orders, seed=args.seed, bad_rows=args.bad_rows)
    print(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
