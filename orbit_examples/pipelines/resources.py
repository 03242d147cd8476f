"""The resources of the example code location: store, checkpoint IO manager, carrier — all
from env, bound once in ``orbit_examples.definitions`` (the jobs carry no ``resource_defs``).
"""

from __future__ import annotations

from typing import Any

from dagster import EnvVar

from orbit_examples.carrier.resource import (
    CARRIER_TOKEN_ENV,
    CARRIER_URL_ENV,
    CarrierResource,
)
from orbit_pipelines import OrbitStore, PostgresCheckpointIOManager


def example_resources(*, carrier: bool = True) -> dict[str, Any]:
    """``orbit_store``, a checkpoint ``io_manager`` on that store, and ``carrier``.

    Dagster initializes only the resources a run's steps need, so a job without a carrier
    step never reads the carrier's environment variables."""
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
