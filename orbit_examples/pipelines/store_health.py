"""A one-op job that proves the code location reaches the orbit store."""

from dagster import MetadataValue, OpExecutionContext, Output, job, op

from orbit_pipelines import OrbitStore
from orbit_pipelines.store.migrations import status
from orbit_pipelines.store.urls import safe_target


@op(description="Connects to the orbit store and reports its schema version.")
def check_store(context: OpExecutionContext, orbit_store: OrbitStore) -> Output[int]:
    """Report the store's schema version as output metadata."""
    state = status(orbit_store.engine)
    context.log.info(state.describe())
    return Output(
        state.current,
        metadata={
            "schema_version": state.current,
            # host:port/database only: no URL (user, password) in the event log.
            "store": MetadataValue.text(safe_target(orbit_store.postgres_url)),
        },
    )


@job(description="Checks that Dagster and the orbit store share one Postgres.")
def store_health() -> None:
    """The smallest job that touches the store."""
    check_store()
