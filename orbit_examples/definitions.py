"""The example code location (``workspace.yaml``): jobs, the recovery sensor and the
resources, bound once here. No logic lives here; only orbit_pipelines' public API is used.
"""

from __future__ import annotations

from dagster import Definitions

from orbit_examples.pipelines.orders_import import orders_import
from orbit_examples.pipelines.resources import example_resources
from orbit_examples.pipelines.sales_rollup import sales_rollup
from orbit_examples.pipelines.shipments import shipments
from orbit_examples.pipelines.store_health import store_health
from orbit_pipelines import make_recovery_sensor

defs = Definitions(
    jobs=[store_health, orders_import, shipments, sales_rollup],
    sensors=[make_recovery_sensor()],
    # The store the ops use is also where the checkpoint IO manager keeps step outputs.
    resources=example_resources(),
)
