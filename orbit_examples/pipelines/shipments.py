"""``shipments``: orders → a shipment at the carrier per order → tracking number on the order.

    load_orders → shard_orders (K dynamic shards) → ship_shard[shard_i] (rows, checkpointed)
                                                   → shipping_report

Each shard runs in its own process under the multiprocess executor and checkpoints its own
rows in the row ledger, so a SIGKILL of one shard costs only that shard's in-flight batch.
Per order, two effects run through the row executor:

- the carrier call, an *idempotent* effect: the ``Idempotency-Key`` is the order's own
  (``shipment:<order_id>``), so a repeat after a crash — or even ``orbit restart`` — gets
  the shipment the carrier already made, never a second one;
- the tracking number written back to ``orbit_examples.orders``, a *transactional* effect
  that commits with the row's status.

Carrier failures: timeouts (E-3001) and 429s (E-3002) are retried here with backoff; when
the attempts run out the step fails with that code and recovery re-executes it (rows done
so far are kept). An address error (E-3003) is not retried: the order is quarantined with
its code and the other orders go on.

No ``from __future__ import annotations``: Dagster reads the op annotations.
"""

import time
import zlib
from typing import Any

from dagster import (
    Config,
    DynamicOut,
    DynamicOutput,
    OpExecutionContext,
    job,
    op,
)
from pydantic import Field

from orbit_examples.carrier.client import CarrierClient, CarrierError
from orbit_examples.carrier.resource import CarrierResource
from orbit_examples.pipelines import example_tables
from orbit_examples.pipelines.orders_ops import load_orders
from orbit_examples.pipelines.step_scope import KillSwitch
from orbit_pipelines import ExecutorOptions, OrbitStore, RowContext, run_rows


class ShardConfig(Config):
    """How many shards (parallel processes) to split the orders into."""

    shards: int = Field(default=4, ge=1, le=64, description="K: number of shards.")


class ShipConfig(Config):
    """How a shard ships its orders, and the demo fault injection."""

    batch_size: int = Field(default=50, ge=1, description="Rows committed per transaction.")
    max_attempts: int = Field(
        default=4, ge=1, description="Carrier calls per order for timeouts and 429s."
    )
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay (doubles).")
    kill_after_rows: int | None = Field(
        default=None,
        ge=1,
        description="Fault injection: SIGKILL the shard's process after this many rows, "
        "first attempt only. Off by default.",
    )
    kill_shard: int | None = Field(
        default=None, ge=0, description="With kill_after_rows: only this shard (default: all)."
    )


def shard_of(order_id: str, shards: int) -> int:
    """Stable shard number of an order (the same in every process and every run)."""
    return zlib.crc32(order_id.encode()) % shards


@op(out=DynamicOut(list), description="Splits the orders into K shards by order id.")
def shard_orders(context: OpExecutionContext, config: ShardConfig, orders: list) -> Any:
    """One dynamic output per non-empty shard, mapping key ``shard_<i>``."""
    buckets: list[list[dict[str, Any]]] = [[] for _ in range(config.shards)]
    for order in orders:
        buckets[shard_of(order["order_id"], config.shards)].append(order)
    for number, bucket in enumerate(buckets):
        if bucket:
            yield DynamicOutput(bucket, mapping_key=f"shard_{number}")


def create_with_retries(
    client: CarrierClient,
    order: dict[str, Any],
    key: str,
    *,
    max_attempts: int,
    backoff_s: float,
) -> dict[str, Any]:
    """One shipment for ``order``; retries timeouts and 429s with the same key."""
    for attempt in range(1, max_attempts + 1):
        try:
            created = client.create_shipment(
                order_id=order["order_id"],
                address=order["address"],
                items=order["items"],
                idempotency_key=key,
            )
            return {
                "shipment_id": created.shipment_id,
                "tracking_number": created.tracking_number,
            }
        except CarrierError as error:
            if not error.retryable or attempt == max_attempts:
                raise
            delay = backoff_s * 2 ** (attempt - 1)
            if error.retry_after_s is not None:
                delay = max(delay, error.retry_after_s)
            time.sleep(min(delay, 10.0))
    raise AssertionError("unreachable")  # the loop returns or raises


@op(description="Creates a shipment per order of one shard and writes tracking numbers back.")
def ship_shard(
    context: OpExecutionContext,
    config: ShipConfig,
    orbit_store: OrbitStore,
    carrier: CarrierResource,
    orders: list,
) -> dict:
    """Ship the shard's orders not shipped yet; return the row counts."""
    shard = int((context.get_mapping_key() or "shard_0").rsplit("shard_", 1)[-1])
    kill = KillSwitch(
        context,
        config.kill_after_rows if config.kill_shard in (None, shard) else None,
    )
    client = carrier.client()
    example_tables.ensure_tables(orbit_store.engine)

    def ship(order: dict[str, Any], ctx: RowContext) -> None:
        order_id = order["order_id"]
        shipment = ctx.once(
            f"ship:{order_id}",
            lambda _effect_key: create_with_retries(
                client,
                order,
                f"shipment:{order_id}",
                max_attempts=config.max_attempts,
                backoff_s=config.backoff_s,
            ),
        )
        ctx.once(
            f"track:{order_id}",
            lambda conn: example_tables.set_tracking_number_raw(
                conn, order_id, shipment["tracking_number"]
            ),
            receiver="transactional",
        )
        ctx.emit(shipment)
        kill.tick()

    summary = run_rows(
        context,
        orders,
        key="order_id",
        handler=ship,
        options=ExecutorOptions(batch_size=config.batch_size, on_error="quarantine"),
        store=orbit_store,
    )
    return summary.as_metadata()


@op(description="Totals of all shards.")
def shipping_report(context: OpExecutionContext, shards: list) -> dict:
    """Sum the shards' counts."""
    totals: dict[str, float] = {}
    for counts in shards:
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + value
    context.add_output_metadata({k: v for k, v in totals.items() if k.startswith("rows")})
    return totals


@job(
    description="Ships every order at the carrier (K shards, checkpointed rows, idempotent).",
)
def shipments() -> None:
    """load → shard → ship per shard → report."""
    results = shard_orders(load_orders()).map(ship_shard)
    shipping_report(results.collect())
