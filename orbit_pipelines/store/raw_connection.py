"""Plain psycopg connections for the executor's hot path, opened from a store engine.

They are not taken from the engine's pool: the executor holds them for a whole step and
one of them runs in autocommit, a mode a pooled SQLAlchemy connection must not be left in.
"""

from __future__ import annotations

import psycopg
from sqlalchemy import Engine


def connect_raw(engine: Engine, *, autocommit: bool = False) -> psycopg.Connection:
    """A new psycopg connection to the engine's database."""
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(
        url, autocommit=autocommit, connect_timeout=5, application_name="orbit_pipelines"
    )
