"""A test-only code location: two daily-partitioned assets, the second a row step.

``order_totals`` runs ``run_rows`` over the partition's orders with a ``Sum`` and a ``SumBy``
aggregation and one transactional effect per row (a row in ``public.part_effects``), so a
test can check that each row's effect happened once and the totals equal a crash-free run's.

Faults are rows in ``public.part_faults`` the test inserts before launching: for a partition,
after ``after_rows`` rows of the step, the step either SIGKILLs its own process (``kill``),
raises a retryable E-3001 (``fail``) or an E-5001 that is never retried (``deny``). A fault
is marked fired in its own committed transaction before it acts, once per run, on the first
``times`` attempts (default 1).

Also served here: ``crash_steps`` (an asset with an unsafe effect per row, an op job on
``run_frames``), for ``test_asset_and_frame_recovery_e2e.py``.
"""

import datetime as dt
import os
import signal
import time
from typing import Any

from dagster import (
    AssetExecutionContext,
    DailyPartitionsDefinition,
    Definitions,
    EnvVar,
    asset,
    define_asset_job,
    in_process_executor,
)
from sqlalchemy import text

from orbit_pipelines.dagster_io.io_manager import PostgresCheckpointIOManager
from orbit_pipelines.dagster_io.resources import OrbitStore
from orbit_pipelines.dagster_io.row_steps import run_rows
from orbit_pipelines.errors import E3001_SERVICE_TIMEOUT, E5001_UNAUTHORIZED, OrbitError
from orbit_pipelines.execution import ExecutorOptions, RowContext, Sum, SumBy
from orbit_pipelines.sensors.recovery_sensor import make_recovery_sensor
from orbit_pipelines_tests.partitions.crash_steps import (
    CRASH_TABLES,
    charged_orders,
    charges_daily_job,
    frames_job,
)

START = "2026-11-01"
ROWS_PER_PARTITION = 24
ROW_SLEEP_S = float(os.environ.get("PART_ROW_SLEEP_S", "0.15"))
REGIONS = ("north", "south", "east")

TEST_TABLES = (
    "CREATE TABLE IF NOT EXISTS public.part_effects ("
    " id bigserial PRIMARY KEY, partition text, row_id int, run_id text)",
    "CREATE TABLE IF NOT EXISTS public.part_faults ("
    " partition text PRIMARY KEY, kind text NOT NULL, after_rows int NOT NULL,"
    " times int NOT NULL DEFAULT 1, fired_in text)",
    *CRASH_TABLES,
)

daily = DailyPartitionsDefinition(start_date=START)


def orders_for(partition: str) -> list[dict[str, Any]]:
    """The partition's orders: the same on every attempt, different per day."""
    day = (dt.date.fromisoformat(partition) - dt.date.fromisoformat(START)).days + 1
    return [
        {"id": n, "region": REGIONS[n % len(REGIONS)], "amount": day * 100 + n}
        for n in range(ROWS_PER_PARTITION)
    ]


def expected_totals(partition: str) -> dict[str, Any]:
    """What a crash-free run of ``order_totals`` aggregates for ``partition``."""
    by_region: dict[str, int] = {}
    for order in orders_for(partition):
        by_region[order["region"]] = by_region.get(order["region"], 0) + order["amount"]
    return {"total": sum(o["amount"] for o in orders_for(partition)), "by_region": by_region}


@asset(partitions_def=daily)
def daily_orders(context: AssetExecutionContext) -> list[dict[str, Any]]:
    """The day's orders (stored by the checkpoint IO manager, loaded by the next asset)."""
    return orders_for(context.partition_key)


def _fault(store: OrbitStore, partition: str, run_id: str, processed: int) -> str | None:
    """Claim the partition's fault if it is due now; its kind, or None."""
    with store.engine.begin() as conn:
        row = conn.execute(
            text(
                "UPDATE public.part_faults SET fired_in = :r, times = times - 1"
                " WHERE partition = :p AND times > 0 AND fired_in IS DISTINCT FROM :r"
                " AND after_rows <= :n RETURNING kind"
            ),
            {"p": partition, "r": run_id, "n": processed},
        ).first()
    return None if row is None else str(row[0])


@asset(partitions_def=daily)
def order_totals(
    context: AssetExecutionContext, orbit_store: OrbitStore, daily_orders: list[dict[str, Any]]
) -> dict[str, Any]:
    """Per-row effect once, totals over the rows: a row step on an asset."""
    partition = context.partition_key
    run_id = context.run.run_id
    processed = {"rows": 0}

    def handle(order: dict[str, Any], ctx: RowContext) -> None:
        kind = _fault(orbit_store, partition, run_id, processed["rows"])
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "fail":
            raise OrbitError(E3001_SERVICE_TIMEOUT, f"partition {partition}: carrier timed out")
        if kind == "deny":
            raise OrbitError(E5001_UNAUTHORIZED, f"partition {partition}: carrier refused the key")
        time.sleep(ROW_SLEEP_S)

        def record(conn: Any) -> None:
            conn.execute(
                "INSERT INTO public.part_effects (partition, row_id, run_id) VALUES (%s, %s, %s)",
                (partition, order["id"], run_id),
            )

        ctx.once(f"effect-{order['id']}", record, receiver="transactional")
        ctx.agg["total"].add(order["amount"])
        ctx.agg["by_region"].add((order["region"], order["amount"]))
        processed["rows"] += 1

    summary = run_rows(
        context,
        daily_orders,
        key="id",
        handler=handle,
        aggregations={"total": Sum(), "by_region": SumBy()},
        options=ExecutorOptions(batch_size=2, heartbeat_every_s=0.5),
        store=orbit_store,
    )
    return summary.aggregations


orders_daily_job = define_asset_job(
    "orders_daily_job", selection=[daily_orders, order_totals], partitions_def=daily
)

_store = OrbitStore(postgres_url=EnvVar("ORBIT_POSTGRES_URL"))

defs = Definitions(
    assets=[daily_orders, order_totals, charged_orders],
    jobs=[orders_daily_job, charges_daily_job, frames_job],
    sensors=[make_recovery_sensor()],
    executor=in_process_executor,
    resources={"orbit_store": _store, "io_manager": PostgresCheckpointIOManager(store=_store)},
)
