"""The resources the example jobs bind: store, checkpoint IO manager, carrier — all from env.

Each job carries these so it runs the same under ``dagster dev``, ``execute_job`` in a
test, or a step subprocess of the multiprocess executor.
"""

from __future__ import annotations

from typing import Any

from dagster import EnvVar

from orbit_examples.carrier.resource import (
    CARRIER_TOKEN_ENV,
    CARRIER_URL_ENV,
    CarrierResource,
)
from orbit_pipelines.dagster_io.io_manager import PostgresCheckpointIOManager
from orbit_pipelines.dagster_io.resources import OrbitStore


def example_resources(*, carrier: bool = False) -> dict[str, Any]:
    """``orbit_store`` and a checkpoint ``io_manager``; plus ``carrier`` when asked."""
    store = OrbitStore(postgres_url=EnvVar("ORBIT_POSTGRES_URL"))
    resources: dict[str, Any] = {
        "orbit_store": store,
        "io_manager": PostgresCheckpointIOManager(store=store),
    }
    if carrier:
        resources["carrier"] = CarrierResource(
            base_url=EnvVar(CARRIER_URL_ENV), token=EnvVar(CARRIER_TOKEN_ENV)
        )
    return resources
