"""SQLAlchemy engines for the orbit store, and the connect-time errors a person can act on."""

from __future__ import annotations

import os

import psycopg
from sqlalchemy import Engine, create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool

from orbit_pipelines.errors import (
    E2001_DB_UNREACHABLE,
    E2002_DB_AUTH,
    E2003_DB_MISSING,
    OrbitError,
)
from orbit_pipelines.store.retry import is_transient, retry_transient
from orbit_pipelines.store.urls import describe_target, mask_url, resolve_url, sqlalchemy_url

CONNECT_BUDGET_ENV = "ORBIT_CONNECT_RETRY_SECONDS"
DEFAULT_CONNECT_BUDGET_S = 5.0


def connect_budget_s() -> float:
    """How long to keep retrying a transient connect failure (``ORBIT_CONNECT_RETRY_SECONDS``)."""
    raw = os.environ.get(CONNECT_BUDGET_ENV)
    return float(raw) if raw else DEFAULT_CONNECT_BUDGET_S


def create_store_engine(url: str | None = None, *, pooled: bool = False) -> Engine:
    """An engine for the orbit store.

    ``pooled=False`` (NullPool) suits short-lived processes such as the CLI and run workers,
    which must not hold idle connections; long-lived ones (the executor in a step, the
    sensor) pass ``pooled=True`` to keep a small pool.
    """
    resolved = url or resolve_url()
    sa_url = sqlalchemy_url(resolved)
    connect_args = {"connect_timeout": 5, "application_name": "orbit_pipelines"}
    if pooled:
        return create_engine(
            sa_url, pool_size=2, max_overflow=4, pool_pre_ping=True, connect_args=connect_args
        )
    return create_engine(sa_url, poolclass=NullPool, connect_args=connect_args)


def explain_connect_error(engine: Engine, error: BaseException) -> OrbitError:
    """Turn a driver error at connect time into one clear line naming the target."""
    target = describe_target(engine.url)
    cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    lowered = detail.lower()
    masked = mask_url(engine.url.set(drivername="postgresql"))
    if "password authentication failed" in lowered or "authentication failed" in lowered:
        return OrbitError(
            E2002_DB_AUTH,
            f"Postgres at {target} rejected the user or password ({masked})",
            hint="check the credentials in ORBIT_POSTGRES_URL",
        )
    if "does not exist" in lowered and "database" in lowered:
        return OrbitError(
            E2003_DB_MISSING,
            f"database '{engine.url.database}' does not exist on {target}",
            hint="create it (createdb) or point ORBIT_POSTGRES_URL at an existing database",
        )
    return OrbitError(
        E2001_DB_UNREACHABLE,
        f"cannot connect to Postgres at {target} ({masked}): {detail}",
        hint="is the server running and ORBIT_POSTGRES_URL right? Unset it to use the embedded one",
    )


def check_connection(engine: Engine, *, budget_s: float | None = None) -> None:
    """Connect once, retrying transient failures within the budget; raise OrbitError if not."""

    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        retry_transient(ping, budget_s=connect_budget_s() if budget_s is None else budget_s)
    except (psycopg.Error, sa_exc.DBAPIError) as error:
        raise explain_connect_error(engine, error) from None


def connect_store(url: str | None = None, *, pooled: bool = False) -> Engine:
    """Create an engine, prove the database answers, and bring the orbit schema up to date."""
    from orbit_pipelines.store.migrations import upgrade

    engine = create_store_engine(url, pooled=pooled)
    check_connection(engine)
    upgrade(engine)
    return engine


__all__ = [
    "check_connection",
    "connect_store",
    "create_store_engine",
    "explain_connect_error",
    "is_transient",
]
