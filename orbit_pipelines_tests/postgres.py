"""The Postgres server the tests use, and one fresh database per test.

Order of preference: ``ORBIT_TEST_POSTGRES_URL``; else the server on 127.0.0.1:5432 when it
answers; else an embedded server (pgserver) started for this test session and stopped at
its end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TEST_URL_ENV = "ORBIT_TEST_POSTGRES_URL"
# ORBIT_TEST_POSTGRES=embedded skips the local server: how we prove the suite passes on a
# machine where no Postgres runs, without stopping the one that does.
MODE_ENV = "ORBIT_TEST_POSTGRES"


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


@contextmanager
def test_server(scratch: Path) -> Iterator[str]:
    """Yield an admin URL (a database we may CREATE DATABASE from)."""
    explicit = os.environ.get(TEST_URL_ENV)
    if explicit:
        yield explicit
        return
    if os.environ.get(MODE_ENV) != "embedded" and _answers(LOCAL_URL):
        yield LOCAL_URL
        return
    from orbit_pipelines.store.embedded import embedded_url, stop_embedded

    home = scratch / "embedded-test-pg"
    url = embedded_url(home)
    try:
        yield url
    finally:
        stop_embedded(home)


def with_database(url: str, database: str) -> str:
    """The same server, another database."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def create_database(admin_url: str, *, template: str | None = None, prefix: str = "orbit_t") -> str:
    """Create a uniquely named database (optionally cloned from a template); return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    """Drop a test database, disconnecting whatever still uses it."""
    name = make_url(url).database
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
