"""The op the row jobs start with: read the orders CSV, load it, quarantine its bad rows.

No ``from __future__ import annotations``: Dagster reads the op annotations.
"""

from dagster import Config, MetadataValue, OpExecutionContext, op
from pydantic import Field

from orbit_examples.pipelines import example_tables
from orbit_examples.pipelines.orders_input import read_orders
from orbit_pipelines import OrbitStore


class OrdersFileConfig(Config):
    """Which orders CSV to read."""

    csv_path: str = Field(description="Path of the orders CSV (see orders_input for its schema).")


@op(description="Reads the orders CSV; upserts valid orders and quarantines bad rows.")
def load_orders(
    context: OpExecutionContext, config: OrdersFileConfig, orbit_store: OrbitStore
) -> list:
    """The valid orders as JSON dicts (the checkpoint IO manager stores them)."""
    parsed = read_orders(config.csv_path)
    loaded, quarantined = example_tables.load_parsed(orbit_store.engine, parsed)
    by_code: dict[str, int] = {}
    for reject in parsed.rejects:
        by_code[reject.code] = by_code.get(reject.code, 0) + 1
    if parsed.rejects:
        context.log.warning(
            f"{quarantined} row(s) quarantined in orbit_examples.orders_quarantine: {by_code}"
        )
    context.add_output_metadata(
        {
            "orders": loaded,
            "quarantined": quarantined,
            "quarantined_by_code": MetadataValue.json(by_code),
            "source_sha256": parsed.digest,
        }
    )
    return [order.as_json() for order in parsed.orders]
