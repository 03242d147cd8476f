"""A one-op job that proves the code location reaches the orbit store."""

from dagster import MetadataValue, OpExecutionContext, Output, job, op

from orbit_pipelines import OrbitStore


@op(description="Connects to the orbit store and reports its schema version.")
def check_store(context: OpExecutionContext, orbit_store: OrbitStore) -> Output[int]:
    """Report the store's schema version as output metadata."""
    version = orbit_store.schema_version()
    # host:port/database only: no URL (user, password) in the event log.
    where = orbit_store.target()
    context.log.info(f"orbit schema at version {version} on {where}")
    return Output(
        version,
        metadata={"schema_version": version, "store": MetadataValue.text(where)},
    )


@job(description="Checks that Dagster and the orbit store share one Postgres.")
def store_health() -> None:
    """The smallest job that touches the store."""
    check_store()
