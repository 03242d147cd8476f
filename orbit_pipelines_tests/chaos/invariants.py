"""What must hold after a round, read from the receivers (carrier tables, the user's tables,
a trigger-fed log of tracking-number writes) and from orbit's and Dagster's own records —
never from what the job says about itself."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, text

from orbit_examples.pipelines.sales_rollup import TOTALS, expected_totals, group_key

# Every committed UPDATE that sets orders.tracking_number leaves one row here, so a second
# write of the same number (which the final table could not show) is still counted. A
# rolled-back write leaves nothing: it did not happen.
TRACKING_LOG_DDL = (
    "CREATE TABLE IF NOT EXISTS public.chaos_tracking_writes ("
    " id bigserial PRIMARY KEY, order_id text NOT NULL, tracking_number text,"
    " at timestamptz NOT NULL DEFAULT clock_timestamp())",
    "CREATE OR REPLACE FUNCTION public.chaos_log_tracking() RETURNS trigger"
    " LANGUAGE plpgsql AS $$ BEGIN"
    " INSERT INTO public.chaos_tracking_writes (order_id, tracking_number)"
    " VALUES (NEW.order_id, NEW.tracking_number); RETURN NEW; END $$",
    "DROP TRIGGER IF EXISTS chaos_tracking ON orbit_examples.orders",
    "CREATE TRIGGER chaos_tracking AFTER UPDATE OF tracking_number ON orbit_examples.orders"
    " FOR EACH ROW EXECUTE FUNCTION public.chaos_log_tracking()",
)

# The receivers' tables are emptied between rounds: order ids repeat from round to round.
RESET_SQL = (
    "TRUNCATE carrier.shipments, carrier.requests, carrier.faults,"
    " orbit_examples.orders, orbit_examples.orders_quarantine, orbit_examples.sales_summary,"
    " public.chaos_tracking_writes"
)


def install_tracking_log(engine: Engine) -> None:
    """Create the tracking-write log and its trigger (idempotent)."""
    with engine.begin() as conn:
        for ddl in TRACKING_LOG_DDL:
            conn.execute(text(ddl))


def reset_receivers(engine: Engine) -> None:
    """Empty the carrier's and the example jobs' tables before a round."""
    with engine.begin() as conn:
        conn.execute(text(RESET_SQL))


@dataclass
class Verdict:
    """Counts of what went wrong (all zero when every invariant holds)."""

    lost: int = 0
    duplicated: int = 0
    quarantined: int = 0
    problems: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def problem(self, message: str) -> None:
        """Record a broken invariant (kept short: the JSON line carries a few)."""
        self.problems.append(message)


def _row_statuses(conn: Connection, root: str, step_like: str) -> dict[str, list[str]]:
    rows = conn.execute(
        text(
            "SELECT row_key, status FROM orbit.row_outcomes"
            " WHERE root_run_id = :g AND step_key LIKE :s"
        ),
        {"g": root, "s": step_like},
    )
    found: dict[str, list[str]] = {}
    for key, status in rows:
        found.setdefault(key, []).append(status)
    return found


def _check_rows(verdict: Verdict, statuses: dict[str, list[str]], order_ids: list[str]) -> set[str]:
    """Every order has exactly one ledger row, done (quarantined counts, but is reported).
    Returns the orders whose row is missing or unfinished."""
    lost: set[str] = set()
    for order_id in order_ids:
        seen = statuses.get(order_id, [])
        if len(seen) > 1:
            verdict.duplicated += len(seen) - 1
            verdict.problem(f"{order_id}: {len(seen)} ledger rows")
        if not seen or seen[0] not in ("done", "quarantined"):
            lost.add(order_id)
            verdict.problem(f"{order_id}: ledger row {seen or 'missing'}")
        elif seen[0] == "quarantined":
            verdict.quarantined += 1
    extra = set(statuses) - set(order_ids)
    if extra:
        verdict.problem(f"{len(extra)} ledger rows for orders not in the input")
    return lost


def check_shipments(conn: Connection, root: str, orders: list[dict[str, Any]]) -> Verdict:
    """Each order: one shipment at the carrier, one committed tracking write, equal to the
    carrier's number, and one done row in the ledger."""
    verdict = Verdict()
    ids = [o["order_id"] for o in orders]
    shipments: dict[str, list[str]] = {}
    for order_id, tracking in conn.execute(
        text("SELECT order_id, tracking_number FROM carrier.shipments")
    ):
        shipments.setdefault(order_id, []).append(tracking)
    stored: dict[str, str | None] = {
        str(order_id): tracking
        for order_id, tracking in conn.execute(
            text("SELECT order_id, tracking_number FROM orbit_examples.orders")
        )
    }
    writes = Counter(
        order_id
        for (order_id,) in conn.execute(text("SELECT order_id FROM public.chaos_tracking_writes"))
    )
    statuses = _row_statuses(conn, root, "ship_shard%")
    # An order counts once as lost, however many of its checks failed.
    lost = _check_rows(verdict, statuses, ids)
    for order_id in ids:
        made = shipments.get(order_id, [])
        if len(made) > 1:
            verdict.duplicated += len(made) - 1
            verdict.problem(f"{order_id}: {len(made)} shipments at the carrier")
        if writes[order_id] > 1:
            verdict.duplicated += writes[order_id] - 1
            verdict.problem(f"{order_id}: tracking number written {writes[order_id]} times")
        if statuses.get(order_id, ["?"])[0] == "quarantined":
            continue  # reported as quarantined; not expected to be shipped
        if not made or writes[order_id] == 0 or stored.get(order_id) not in made:
            lost.add(order_id)
            verdict.problem(
                f"{order_id}: shipments {len(made)}, writes {writes[order_id]},"
                f" stored {stored.get(order_id)!r}"
            )
    verdict.lost = len(lost)
    unknown = set(shipments) - set(ids)
    if unknown:
        verdict.duplicated += len(unknown)
        verdict.problem(f"{len(unknown)} shipments for orders not in the input")
    replays = conn.execute(
        text("SELECT count(*) - count(DISTINCT idempotency_key) FROM carrier.requests")
    ).scalar_one()
    verdict.info["carrier_repeated_requests"] = int(replays or 0)
    return verdict


def check_sales(conn: Connection, root: str, orders: list[dict[str, Any]]) -> Verdict:
    """The summary table equals the crash-free totals; every order's row is done."""
    verdict = Verdict()
    unfinished = _check_rows(
        verdict, _row_statuses(conn, root, "rollup_sales"), [o["order_id"] for o in orders]
    )
    expected = expected_totals(orders)
    actual: dict[str, dict[str, int]] = {}
    for region, day, items, quantity, revenue in conn.execute(
        text(
            "SELECT region, order_date, items, quantity, revenue FROM orbit_examples.sales_summary"
        )
    ):
        actual[group_key(region, day.isoformat())] = {
            "items": int(items),
            "quantity": int(quantity),
            "revenue_cents": int(Decimal(revenue) * 100),
        }
    for group in sorted(set(expected) | set(actual)):
        want = expected.get(group, dict.fromkeys(TOTALS, 0))
        got = actual.get(group, dict.fromkeys(TOTALS, 0))
        if want != got:
            # More items than a crash-free run means rows counted twice; fewer, rows lost.
            diff = got["items"] - want["items"]
            if diff > 0:
                verdict.duplicated += diff
            else:
                verdict.lost += -diff
            verdict.problem(f"totals of {group}: {got} != crash-free {want}")
    # Unfinished rows show up as missing items in the totals; count them there only, unless
    # the totals still add up (then the ledger alone is wrong).
    if unfinished and verdict.lost == 0:
        verdict.lost = len(unfinished)
    return verdict
