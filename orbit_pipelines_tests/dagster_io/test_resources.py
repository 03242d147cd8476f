"""The OrbitStore resource migrates on first connect and reports where the store is."""

from __future__ import annotations

from orbit_examples.pipelines.store_health import store_health
from orbit_pipelines.dagster_io.resources import OrbitStore
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.migrations import available_migrations, status


def test_first_connect_from_a_job_applies_the_schema(empty_db_url: str) -> None:
    engine = create_store_engine(empty_db_url)
    assert status(engine).current == 0

    # The job as defined (no resources of its own), given just the store.
    result = store_health.execute_in_process(
        resources={"orbit_store": OrbitStore(postgres_url=empty_db_url)}
    )

    assert result.success
    assert status(engine).is_current
    assert result.output_for_node("check_store") == available_migrations()[-1].version
    engine.dispose()


def test_describe_masks_the_password() -> None:
    store = OrbitStore(postgres_url="postgresql://etl:hunter2@db.internal:5432/orbit")
    assert "hunter2" not in store.describe()
    assert "db.internal" in store.describe()
