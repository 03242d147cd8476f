"""Migrations against a real Postgres: idempotent, race-free, and checkable."""

from __future__ import annotations

import multiprocessing

from sqlalchemy import inspect, text

from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.migrations import available_migrations, status, upgrade
from orbit_pipelines.store.tables import metadata, views


def test_fresh_database_gets_every_migration_once(empty_db_url: str) -> None:
    engine = create_store_engine(empty_db_url)
    applied = upgrade(engine)
    assert [m.version for m in applied] == [m.version for m in available_migrations()]
    assert upgrade(engine) == []  # idempotent: a second run applies nothing
    assert status(engine).is_current
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version FROM orbit.schema_migrations")).scalars()
        assert sorted(versions) == [m.version for m in available_migrations()]
    engine.dispose()


def _migrate(url: str, barrier: multiprocessing.synchronize.Barrier) -> int:
    engine = create_store_engine(url)
    barrier.wait()  # both processes reach upgrade() together
    applied = len(upgrade(engine))
    engine.dispose()
    return applied


def test_two_processes_migrating_at_once_end_with_one_schema(empty_db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            results = pool.starmap(_migrate, [(empty_db_url, barrier), (empty_db_url, barrier)])
    # Exactly one process applied everything; the other waited on the lock and found none.
    assert sorted(results) == [0, len(available_migrations())]
    engine = create_store_engine(empty_db_url)
    assert status(engine).is_current
    engine.dispose()


def test_status_reports_an_outdated_schema(empty_db_url: str) -> None:
    engine = create_store_engine(empty_db_url)
    upgrade(engine)
    *_, previous, latest = available_migrations()
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM orbit.schema_migrations WHERE version = :v"), {"v": latest.version}
        )
    state = status(engine)
    assert not state.is_current
    assert state.current == previous.version  # versions may have gaps
    assert [m.version for m in state.pending] == [latest.version]
    assert "orbit db upgrade" in state.describe()
    engine.dispose()


def test_tables_module_matches_the_migrated_schema(db_url: str) -> None:
    """tables.py is a hand-written view of the SQL; fail when they drift apart."""
    engine = create_store_engine(db_url)
    inspector = inspect(engine)
    assert {t.name for t in views.sorted_tables} <= set(inspector.get_view_names("orbit"))
    for table in [*metadata.sorted_tables, *views.sorted_tables]:
        columns = {c["name"]: c for c in inspector.get_columns(table.name, schema="orbit")}
        assert set(columns) == {c.name for c in table.columns}, table.name
        for column in table.columns:
            assert columns[column.name]["nullable"] == column.nullable, (table.name, column.name)
        pk = inspector.get_pk_constraint(table.name, schema="orbit")["constrained_columns"]
        assert set(pk) == {c.name for c in table.primary_key.columns}, table.name
    engine.dispose()
