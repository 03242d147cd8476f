"""Postgres state store: engines, migrations, tables and the queries on them.

Imports nothing from dagster: it is tested on its own against a real Postgres.
"""

from orbit_pipelines.store.engine import check_connection, connect_store, create_store_engine
from orbit_pipelines.store.urls import mask_url, resolve_url

__all__ = ["check_connection", "connect_store", "create_store_engine", "mask_url", "resolve_url"]
