"""The resources of the example code location: store, checkpoint IO manager, carrier — all
from env, bound once in ``orbit_examples.definitions`` (the jobs carry no ``resource_defs``).
"""

from __future__ import annotations

from typing import Any

from dagster import EnvVar

from orbit_examples.carrier.resource import carrier_from_env
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
        # ORBIT_CARRIER_URL/ORBIT_CARRIER_TOKEN, or the local carrier when they are unset.
        resources["carrier"] = carrier_from_env()
    return resources
