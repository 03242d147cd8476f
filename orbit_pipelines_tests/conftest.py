"""Shared fixtures: a real Postgres, a fresh database per test, Dagster homes, child processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from orbit_pipelines.dagster_io.dagster_home import (
    dagster_env,
    dagster_instance,
    prepare_dagster_home,
)
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.migrations import upgrade
from orbit_pipelines_tests.postgres import create_database, drop_database, test_server
from orbit_pipelines_tests.processes import ChildProcesses


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a database on the test server from which we create per-test databases."""
    with test_server(tmp_path_factory.mktemp("pg")) as url:
        yield url


@pytest.fixture(scope="session")
def orbit_template(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Name of a template database with the orbit schema and Dagster's own storage tables,
    created once per session: cloning it is much faster than migrating every test database."""
    url = create_database(pg_admin_url, prefix="orbit_tmpl")
    engine = create_store_engine(url)
    upgrade(engine)
    engine.dispose()
    _create_dagster_schema(url, tmp_path_factory.mktemp("template_dagster_home"))
    name = make_url(url).database
    assert name is not None
    yield name
    drop_database(pg_admin_url, url)


def _create_dagster_schema(url: str, home: Path) -> None:
    """Let Dagster create its run/event/schedule tables in the template database."""
    with dagster_instance(prepare_dagster_home(home), url):
        pass


@pytest.fixture
def empty_db_url(pg_admin_url: str) -> Iterator[str]:
    """A new, empty database (no orbit schema), dropped after the test."""
    url = create_database(pg_admin_url)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture
def db_url(pg_admin_url: str, orbit_template: str) -> Iterator[str]:
    """A new database with the current orbit schema, dropped after the test."""
    url = create_database(pg_admin_url, template=orbit_template)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A pooled engine on ``db_url``."""
    eng = create_store_engine(db_url, pooled=True)
    yield eng
    eng.dispose()


@pytest.fixture
def children() -> Iterator[ChildProcesses]:
    """Processes a test starts; every one is killed by its pid when the test ends."""
    with ChildProcesses() as procs:
        yield procs


@pytest.fixture
def dagster_home(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME on this test's database; this process's env points at it too."""
    home = prepare_dagster_home(tmp_path / "dagster_home")
    for key, value in dagster_env(home, db_url, base={}).items():
        monkeypatch.setenv(key, value)
    return home
