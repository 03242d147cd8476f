"""The code location: jobs, sensors and resources. No logic lives here."""

from __future__ import annotations

from dagster import Definitions, EnvVar

from orbit_examples.pipelines.orders_import import orders_import
from orbit_examples.pipelines.sales_rollup import sales_rollup
from orbit_examples.pipelines.shipments import shipments
from orbit_examples.pipelines.store_health import store_health
from orbit_pipelines.dagster_io.io_manager import PostgresCheckpointIOManager
from orbit_pipelines.dagster_io.resources import OrbitStore
from orbit_pipelines.sensors.recovery_sensor import make_recovery_sensor

# The store the ops use is also where the checkpoint IO manager keeps step outputs.
orbit_store = OrbitStore(postgres_url=EnvVar("ORBIT_POSTGRES_URL"))

defs = Definitions(
    jobs=[store_health, orders_import, shipments, sales_rollup],
    sensors=[make_recovery_sensor()],
    resources={
        "orbit_store": orbit_store,
        "io_manager": PostgresCheckpointIOManager(store=orbit_store),
    },
)
