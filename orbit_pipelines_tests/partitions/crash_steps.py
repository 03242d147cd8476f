"""Two crash-safe steps written as a user would, with the public API of ``orbit_pipelines``
only (part of the ``orbit_partitions`` test location, see ``location.py``):

- ``charged_orders``: a daily-partitioned **asset** whose row step calls a carrier that
  honours no idempotency key (``ctx.once(..., receiver="unsafe")``): each charge is a row in
  ``public.crash_charges``, written on its own connection, outside orbit's transaction;
- ``frames_job``: an **op job** (multiprocess executor: the step has a process of its own)
  whose step prices a DataFrame chunk by chunk with ``run_frames``, writing each row through
  ``fctx.conn`` (``public.crash_frame_rows``, committed with the chunk); a second op stores
  the total it was handed (``public.crash_frame_totals``).

A test parks a step to SIGKILL it at a known point: a row in ``public.crash_parks`` for a
target (``charged_orders:<partition>`` or ``frames:<run_id>``) makes the first run that gets
there record its pid and sleep: the asset before row ``at`` (after the charges of the rows
before it, which are not all committed yet), the op inside chunk ``at`` (its rows written,
not committed). Nothing parks twice.

No ``from __future__ import annotations``: Dagster inspects the signatures.
"""

import datetime as dt
import os
import time
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    DailyPartitionsDefinition,
    OpExecutionContext,
    asset,
    define_asset_job,
    job,
    multiprocess_executor,
    op,
)
from sqlalchemy import text

from orbit_pipelines import (
    ExecutorOptions,
    FrameContext,
    OrbitStore,
    RowContext,
    Sum,
    SumBy,
    run_frames,
    run_rows,
)

CHARGE_ROWS = 20
CHARGE_BATCH = 4
FRAME_ROWS = 40
FRAME_BATCH = 8
PARK_LIMIT_S = 600.0  # the test kills long before; a forgotten park still ends

CRASH_TABLES = (
    "CREATE TABLE IF NOT EXISTS public.crash_charges ("
    " id bigserial PRIMARY KEY, partition text, row_id int, run_id text)",
    "CREATE TABLE IF NOT EXISTS public.crash_frame_rows ("
    " id bigserial PRIMARY KEY, row_id int, run_id text)",
    "CREATE TABLE IF NOT EXISTS public.crash_frame_totals ("
    " id bigserial PRIMARY KEY, root text, run_id text, total double precision)",
    "CREATE TABLE IF NOT EXISTS public.crash_parks ("
    " target text PRIMARY KEY, at int NOT NULL, fired_in text, pid int)",
)

daily = DailyPartitionsDefinition(start_date="2026-11-01")


def charges_for(partition: str) -> list[dict[str, Any]]:
    """The partition's orders to charge: the same on every attempt."""
    day = dt.date.fromisoformat(partition).day
    return [
        {"id": n, "card": ("visa", "amex")[n % 2], "cents": day * 1000 + n}
        for n in range(CHARGE_ROWS)
    ]


def expected_charge_totals(partition: str) -> dict[str, Any]:
    """What a crash-free run of ``charged_orders`` aggregates."""
    by_card: dict[str, int] = {}
    for row in charges_for(partition):
        by_card[row["card"]] = by_card.get(row["card"], 0) + row["cents"]
    return {"cents": sum(r["cents"] for r in charges_for(partition)), "by_card": by_card}


def price_frame() -> pd.DataFrame:
    """The op job's input: FRAME_ROWS rows with a gross price."""
    return pd.DataFrame({"id": range(FRAME_ROWS), "gross": [2.0 * i for i in range(FRAME_ROWS)]})


def expected_frame_total() -> float:
    """What a crash-free run of ``price_rows`` sums: the net (half the gross) of every row."""
    return float((price_frame()["gross"] * 0.5).sum())


def _park(store: OrbitStore, target: str, position: int, run_id: str) -> None:
    """Sleep here (to be SIGKILLed) if ``target`` is to be parked at ``position`` and no run
    parked there yet; the pid is committed first so the test knows whom to kill."""
    with store.engine.begin() as conn:
        claimed = conn.execute(
            text(
                "UPDATE public.crash_parks SET fired_in = :r, pid = :p"
                " WHERE target = :t AND at = :n AND fired_in IS NULL RETURNING target"
            ),
            {"t": target, "n": position, "r": run_id, "p": os.getpid()},
        ).first()
    if claimed is not None:
        time.sleep(PARK_LIMIT_S)


@asset(partitions_def=daily)
def charged_orders(context: AssetExecutionContext, orbit_store: OrbitStore) -> dict[str, Any]:
    """Charge each order once at a carrier that honours no idempotency key."""
    partition = context.partition_key
    run_id = context.run.run_id

    def charge(row: dict[str, Any], ctx: RowContext) -> None:
        _park(orbit_store, f"charged_orders:{partition}", row["id"], run_id)

        def call_carrier() -> str:
            # Its own connection and commit: orbit's batch transaction cannot undo it.
            with orbit_store.engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO public.crash_charges (partition, row_id, run_id)"
                        " VALUES (:p, :i, :r)"
                    ),
                    {"p": partition, "i": row["id"], "r": run_id},
                )
            return f"receipt-{partition}-{row['id']}"

        receipt = ctx.once(f"charge:{row['id']}", call_carrier, receiver="unsafe")
        ctx.emit({"receipt": receipt})
        ctx.agg["cents"].add(row["cents"])
        ctx.agg["by_card"].add((row["card"], row["cents"]))

    summary = run_rows(
        context,
        charges_for(partition),
        key="id",
        handler=charge,
        aggregations={"cents": Sum(), "by_card": SumBy()},
        options=ExecutorOptions(batch_size=CHARGE_BATCH, heartbeat_every_s=0.5),
    )
    return summary.aggregations


charges_daily_job = define_asset_job(
    "charges_daily_job", selection=[charged_orders], partitions_def=daily
)


@op
def price_rows(context: OpExecutionContext, orbit_store: OrbitStore) -> float:
    """Net prices, one chunk of FRAME_BATCH rows at a time; each row written once."""
    run_id = context.run.run_id
    root = context.run.root_run_id or run_id

    def price(chunk: pd.DataFrame, fctx: FrameContext) -> pd.DataFrame:
        with fctx.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.crash_frame_rows (row_id, run_id) VALUES (%s, %s)",
                [(int(i), run_id) for i in chunk["id"]],
            )
        # Mid-frame: this chunk's rows are written in the batch transaction, not committed.
        _park(orbit_store, f"frames:{root}", fctx.chunk_no, run_id)
        return pd.DataFrame({"net": chunk["gross"] * 0.5}, index=chunk.index)

    summary = run_frames(
        context,
        price_frame(),
        key="id",
        handler=price,
        aggregations={"net": Sum()},
        options=ExecutorOptions(batch_size=FRAME_BATCH, heartbeat_every_s=0.5),
    )
    return float(summary.aggregations["net"])


@op
def store_total(context: OpExecutionContext, orbit_store: OrbitStore, total: float) -> None:
    """Keep the total the step handed on (through the checkpoint IO manager)."""
    with orbit_store.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO public.crash_frame_totals (root, run_id, total) VALUES (:g, :r, :t)"),
            {"g": context.run.root_run_id or context.run.run_id, "r": context.run_id, "t": total},
        )


@job(executor_def=multiprocess_executor)
def frames_job() -> None:
    """Price the frame, then store its total."""
    store_total(price_rows())
