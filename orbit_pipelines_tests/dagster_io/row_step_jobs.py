"""A small job built on ``run_rows``, importable by Dagster for re-execution.

No ``from __future__ import annotations``: Dagster inspects the op signatures.
"""

from typing import Any

from dagster import Config, EnvVar, OpExecutionContext, in_process_executor, job, op

from orbit_pipelines.dagster_io.resources import OrbitStore
from orbit_pipelines.dagster_io.row_steps import run_rows
from orbit_pipelines.errors import E1003_INVALID_VALUE, OrbitError
from orbit_pipelines.execution import ExecutorOptions, RowContext, Sum

ROWS = 100


class ChargeConfig(Config):
    """``reject_id``: the row that raises bad input (-1: none)."""

    reject_id: int = -1


@op
def charge(context: OpExecutionContext, config: ChargeConfig, orbit_store: OrbitStore) -> dict:
    """Charge every order once; total the amounts."""

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        if row["id"] == config.reject_id:
            raise OrbitError(E1003_INVALID_VALUE, f"order {row['id']} has a negative amount")
        ctx.agg["total"].add(row["amount"])

    orders = [{"id": i, "amount": i} for i in range(ROWS)]
    summary = run_rows(
        context,
        orders,
        key="id",
        handler=handle,
        aggregations={"total": Sum()},
        options=ExecutorOptions(batch_size=10, on_error="fail_fast"),
    )
    return summary.aggregations


@job(
    executor_def=in_process_executor,
    resource_defs={"orbit_store": OrbitStore(postgres_url=EnvVar("ORBIT_POSTGRES_URL"))},
)
def charge_orders() -> None:
    """One checkpointed step."""
    charge()
