"""Named SQL files under ``store/queries/``: the hot-path statements run on a raw psycopg
connection, kept as files so every statement is named, reviewed and parameterized."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load_sql(name: str) -> str:
    """The text of ``store/queries/<name>.sql`` (cached; parameters are psycopg ``%(name)s``)."""
    return resources.files("orbit_pipelines.store").joinpath("queries", f"{name}.sql").read_text()
