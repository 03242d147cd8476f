"""Postgres URLs: which database we use, in which dialect, and how to print one safely."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from orbit_pipelines.errors import E2007_BAD_URL, OrbitError

POSTGRES_URL_ENV = "ORBIT_POSTGRES_URL"
ORBIT_HOME_ENV = "ORBIT_HOME"


def orbit_home() -> Path:
    """Where orbit keeps local state (the embedded Postgres, DAGSTER_HOME for `orbit dev`)."""
    return Path(os.environ.get(ORBIT_HOME_ENV) or Path.home() / ".orbit")


def parse_url(url: str) -> URL:
    """Parse a Postgres URL, failing with E-2007 (and the password masked) when it is not one."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise OrbitError(
            E2007_BAD_URL,
            f"{mask_url(url)} is not a database URL",
            hint="expected postgresql://user:password@host:5432/database",
        ) from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise OrbitError(
            E2007_BAD_URL,
            f"{mask_url(url)} is not a Postgres URL",
            hint="orbit_pipelines keeps its state in Postgres; use a postgresql:// URL",
        )
    return parsed


def sqlalchemy_url(url: str) -> URL:
    """The URL for our own engines: SQLAlchemy with the psycopg 3 driver."""
    return parse_url(url).set(drivername="postgresql+psycopg")


def dagster_storage_url(url: str) -> str:
    """The URL for Dagster's own storage, with its driver (psycopg2) named explicitly.

    dagster-postgres writes psycopg2-style SQL (``NOTIFY run_events, %(id)s``); SQLAlchemy
    2.1 maps a bare ``postgresql://`` to psycopg 3, which rejects it. Naming the driver
    keeps Dagster working whatever SQLAlchemy's default is.
    """
    return (
        parse_url(url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    )


def mask_url(url: str | URL) -> str:
    """Render a URL with its password replaced by ``***``; safe for logs and CLI output."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not parseable: mask anything between "://user:" and "@" by hand.
        scheme, sep, rest = url.partition("://")
        if sep and "@" in rest:
            creds, _, host = rest.rpartition("@")
            user = creds.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}"
        return url


def describe_target(url: str | URL) -> str:
    """``host:port/database`` (or the socket directory) for error messages."""
    parsed = url if isinstance(url, URL) else parse_url(url)
    host = parsed.host or parsed.query.get("host") or "localhost"
    if isinstance(host, tuple):
        host = host[0]
    port = parsed.port or 5432
    return f"{host}:{port}/{parsed.database or ''}"


def configured_url() -> str | None:
    """``ORBIT_POSTGRES_URL`` when set and not empty."""
    return os.environ.get(POSTGRES_URL_ENV) or None


def resolve_url() -> str:
    """The database orbit uses: ``ORBIT_POSTGRES_URL``, else the embedded Postgres.

    The embedded server is started on first use and reused afterwards (see ``embedded``).
    """
    url = configured_url()
    if url is not None:
        parse_url(url)
        return url
    from orbit_pipelines.store.embedded import embedded_url

    return embedded_url()
