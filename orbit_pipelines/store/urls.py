"""Postgres URLs: which database we use, in which dialect, and how to print one safely."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from orbit_pipelines.errors import E2007_BAD_URL, OrbitError

POSTGRES_URL_ENV = "ORBIT_POSTGRES_URL"
ORBIT_HOME_ENV = "ORBIT_HOME"


def orbit_home() -> Path:
    """Where orbit keeps local state (the embedded Postgres, DAGSTER_HOME for `orbit dev`)."""
    return Path(os.environ.get(ORBIT_HOME_ENV) or Path.home() / ".orbit")


# A query parameter or libpq keyword that carries a secret.
_SECRET_QUERY = re.compile(r"(?i)([?&](?:password|passwd|sslpassword)=)[^&#]*")
# Also an environment-style name ending in one (PGPASSWORD=, ORBIT_DB_PASSWORD=: a shell
# command quoted by subprocess.CalledProcessError) and a double-quoted value.
_SECRET_KEYWORD = re.compile(
    r"(?i)\b(\w*(?:password|passwd)\s*=\s*)('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S*)"
)
# A quoted key of a mapping's repr or of JSON: {'password': '...'} / {"password": "..."}.
_SECRET_MAPPING = re.compile(
    r"""(?i)(['"]\w*(?:password|passwd)['"]\s*:\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,}]*)"""
)


def _split_credentials(url: str) -> tuple[str, str, str] | None:
    """``(scheme://, user[:password], @rest)`` split at the *last* ``@`` of the authority.

    A password with an unescaped ``@`` (``etl:p@ss@host``) would otherwise be cut at its
    first ``@``, and the part after it taken for the host (and printed).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    first_at = rest.find("@")
    if first_at < 0:
        return None
    query = rest.find("?", first_at)
    at = (rest[:query] if query >= 0 else rest).rfind("@")
    return scheme + sep, rest[:at], rest[at:]


def _escape_password(url: str) -> str:
    """Percent-encode a password that holds ``@``, so it parses as the person meant."""
    parts = _split_credentials(url)
    if parts is None or "@" not in parts[1]:
        return url
    prefix, creds, rest = parts
    user, colon, password = creds.partition(":")
    if not colon:
        return url
    return f"{prefix}{user}:{quote(password, safe='')}{rest}"


def is_keyword_string(url: str) -> bool:
    """Whether ``url`` is a libpq keyword/value string (``host=... dbname=...``), not a URL."""
    return "://" not in url and "=" in url


def parse_url(url: str) -> URL:
    """Parse a Postgres URL, failing with E-2007 (and the password masked) when it is not one."""
    if is_keyword_string(url):
        raise OrbitError(
            E2007_BAD_URL,
            f"'{mask_url(url)}' is a libpq keyword string, not a URL",
            hint="write it as postgresql://user:password@host:5432/database",
        )
    try:
        parsed = make_url(_escape_password(url))
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
    """Render a URL with every password replaced by ``***``; safe for logs and CLI output.

    Covers the password in the authority (also one with an unescaped ``@``), a
    ``?password=`` query parameter and a libpq keyword string (``host=... password=...``).
    Text that is no URL at all is returned with any ``password=`` value masked.
    """
    if isinstance(url, URL):
        return _SECRET_QUERY.sub(r"\1***", url.render_as_string(hide_password=True))
    if is_keyword_string(url):
        return _SECRET_KEYWORD.sub(r"\1***", url)
    parts = _split_credentials(url)
    if parts is not None:
        prefix, creds, rest = parts
        user, colon, _password = creds.partition(":")
        url = f"{prefix}{user}:***{rest}" if colon else url
    return _SECRET_QUERY.sub(r"\1***", _SECRET_KEYWORD.sub(r"\1***", url))


def mask_secrets(text: str, url: str | None = None) -> str:
    """``text`` with ``url`` (if given) replaced by its masked form and any other
    ``scheme://user:password@`` or ``password=`` in it masked: for error messages that
    quote a driver or library whose wording we do not control."""
    if url:
        text = text.replace(url, mask_url(url))
    text = re.sub(r"(\w+://[^\s:/@]*:)[^\s]*@(?=[^\s@]*(?:\s|$))", r"\1***@", text)
    text = _SECRET_MAPPING.sub(r"\1'***'", text)
    return _SECRET_QUERY.sub(r"\1***", _SECRET_KEYWORD.sub(r"\1***", text))


def safe_target(url: str) -> str:
    """``host:port/database`` with no user or password, for event metadata and logs; a URL
    that does not parse gives ``(unparseable URL)`` rather than any part of it."""
    try:
        return describe_target(url)
    except OrbitError:
        return "(unparseable URL)"


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
