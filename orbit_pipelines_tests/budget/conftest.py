"""Fixtures of the connection-budget test: the pipeline tests' carrier, and a database
reached over TCP.

The census tells which process holds a session by its client port, and sessions over a
Unix socket have none. When the test server is reached over a socket (the embedded
Postgres), this test gets a throw-away cluster of its own listening on 127.0.0.1 instead
of skipping.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.migrations import upgrade
from orbit_pipelines_tests.chaos.own_postgres import OwnPostgres
from orbit_pipelines_tests.conftest import _create_dagster_schema
from orbit_pipelines_tests.pipelines.conftest import carrier
from orbit_pipelines_tests.postgres import create_database, drop_database
from orbit_pipelines_tests.processes import ChildProcesses

__all__ = ["carrier", "db_url"]


@pytest.fixture
def db_url(
    pg_admin_url: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database with the orbit schema on a server reached over TCP, dropped after."""
    if make_url(pg_admin_url).host:
        template = request.getfixturevalue("orbit_template")
        url = create_database(pg_admin_url, template=template)
        yield url
        drop_database(pg_admin_url, url)
        return
    with ChildProcesses() as procs:
        root: Path = tmp_path_factory.mktemp("budget_pg")
        server = OwnPostgres(procs, root / "pg").init()
        server.start()
        url = create_database(server.url)
        engine = create_store_engine(url)
        upgrade(engine)
        engine.dispose()
        _create_dagster_schema(url, root / "schema_home")
        yield url
