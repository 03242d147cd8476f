"""The example jobs as the code location binds them (resources from its ``Definitions``).

The jobs themselves carry no resources, so tests run them through these: in process
(``shipments().execute_in_process(...)``) or as a reconstructable target for
``execute_job`` (``reconstructable(shipments)``: step subprocesses call it again).
"""

from dagster import JobDefinition

from orbit_examples.definitions import defs


def shipments() -> JobDefinition:
    """``shipments`` with its resources."""
    return defs.get_job_def("shipments")


def sales_rollup() -> JobDefinition:
    """``sales_rollup`` with its resources."""
    return defs.get_job_def("sales_rollup")


def orders_import() -> JobDefinition:
    """``orders_import`` with its resources."""
    return defs.get_job_def("orders_import")


def store_health() -> JobDefinition:
    """``store_health`` with its resources."""
    return defs.get_job_def("store_health")
