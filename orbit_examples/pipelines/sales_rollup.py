"""``sales_rollup``: totals per region and day, from order lines forked per item.

    load_orders → rollup_sales (rows fork into one token per item; checkpointed
                  aggregation state) → write_sales_summary (upsert)

Each order is a row; ``ctx.fork(items)`` splits it into one token per item, and each token
adds its item count, quantity and revenue (in cents, so sums are exact) to three ``SumBy``
aggregations keyed ``REGION|YYYY-MM-DD``. The executor saves the aggregation state in the
same transaction as the row statuses it reflects, so after a crash anywhere the resumed
step starts from exactly the committed state and skips exactly the committed rows: the
totals equal a crash-free run's. ``write_sales_summary`` replaces the totals of each
(region, day), so writing them twice is the same as once.

No ``from __future__ import annotations``: Dagster reads the op annotations.
"""

from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from dagster import Config, OpExecutionContext, job, op
from pydantic import Field

from orbit_examples.pipelines import example_tables
from orbit_examples.pipelines.orders_ops import load_orders
from orbit_examples.pipelines.step_scope import KillSwitch
from orbit_pipelines import ExecutorOptions, OrbitStore, RowContext, SumBy, run_rows

TOTALS = ("items", "quantity", "revenue_cents")


class RollupConfig(Config):
    """Batch size and the demo fault injection."""

    batch_size: int = Field(default=100, ge=1, description="Rows committed per transaction.")
    kill_after_rows: int | None = Field(
        default=None,
        ge=1,
        description="Fault injection: SIGKILL the step's process after this many rows, "
        "first attempt only. Off by default.",
    )


def group_key(region: str, order_date: str) -> str:
    """The aggregation key of a (region, day)."""
    return f"{region}|{order_date}"


def line_cents(quantity: int, unit_price: str) -> int:
    """Revenue of one order line in whole cents (half up)."""
    total = Decimal(unit_price) * quantity * 100
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def expected_totals(orders: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """The totals computed in one pass with no checkpoints (what a crash-free run yields)."""
    totals: dict[str, dict[str, int]] = {}
    for order in orders:
        group = totals.setdefault(
            group_key(order["region"], order["order_date"]), dict.fromkeys(TOTALS, 0)
        )
        for item in order["items"]:
            group["items"] += 1
            group["quantity"] += int(item["quantity"])
            group["revenue_cents"] += line_cents(int(item["quantity"]), item["unit_price"])
    return totals


@op(description="Forks each order per item and sums items, quantity, revenue per region/day.")
def rollup_sales(
    context: OpExecutionContext, config: RollupConfig, orbit_store: OrbitStore, orders: list
) -> dict:
    """``{"REGION|day": {"items": n, "quantity": q, "revenue_cents": c}}``."""
    kill = KillSwitch(context, config.kill_after_rows)

    def fold(order: dict[str, Any], ctx: RowContext) -> None:
        group = group_key(order["region"], order["order_date"])
        for token in ctx.fork(order["items"]):
            with token:
                item = token.item
                quantity = int(item["quantity"])
                ctx.agg["items"].add((group, 1))
                ctx.agg["quantity"].add((group, quantity))
                ctx.agg["revenue_cents"].add((group, line_cents(quantity, item["unit_price"])))
        kill.tick()

    summary = run_rows(
        context,
        orders,
        key="order_id",
        handler=fold,
        aggregations={n: SumBy() for n in TOTALS},
        options=ExecutorOptions(batch_size=config.batch_size, on_error="quarantine"),
        store=orbit_store,
    )
    states = summary.aggregations
    groups = sorted(set().union(*(states[n].keys() for n in TOTALS)))
    totals = {g: {n: int(states[n].get(g, 0)) for n in TOTALS} for g in groups}
    context.add_output_metadata({"groups": len(totals)})  # next to run_rows' row counts
    return totals


@op(description="Upserts the totals into orbit_examples.sales_summary.")
def write_sales_summary(context: OpExecutionContext, orbit_store: OrbitStore, totals: dict) -> int:
    """Replace each (region, day)'s totals; return how many were written."""
    rows = []
    for group, values in totals.items():
        region, day = group.split("|", 1)
        rows.append(
            (
                region,
                date.fromisoformat(day),
                values["items"],
                values["quantity"],
                Decimal(values["revenue_cents"]) / 100,
            )
        )
    example_tables.ensure_tables(orbit_store.engine)
    with orbit_store.engine.begin() as conn:
        written = example_tables.upsert_sales_summary(conn, rows)
    context.add_output_metadata({"groups_written": written})
    return written


@job(
    description="Sales totals per region and day; a crash anywhere gives the crash-free totals.",
)
def sales_rollup() -> None:
    """load → rollup (forked rows, checkpointed aggregation) → upsert."""
    write_sales_summary(rollup_sales(load_orders()))
