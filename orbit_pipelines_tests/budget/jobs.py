"""The ``shipments`` graph as a job that carries its resources, so ``execute_job`` can rebuild
it in every step process (``reconstructable`` wants a module-level function for ``to_job``)."""

from dagster import JobDefinition

from orbit_examples.pipelines.resources import example_resources
from orbit_examples.pipelines.shipments import shipments


def shipments_with_resources() -> JobDefinition:
    """``shipments`` with the store, checkpoint IO manager and carrier bound."""
    return shipments.graph.to_job(name="shipments", resource_defs=example_resources(carrier=True))
