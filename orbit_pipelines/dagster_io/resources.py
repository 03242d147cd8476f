"""Dagster resources that hand ops a connection to the orbit store."""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr
from sqlalchemy import Engine

from orbit_pipelines.store.engine import connect_store
from orbit_pipelines.store.migrations import status
from orbit_pipelines.store.urls import mask_url, safe_target


class OrbitStore(ConfigurableResource):
    """The orbit Postgres store. Give it ``EnvVar("ORBIT_POSTGRES_URL")`` so the URL (and its
    password) stays out of run config and the UI."""

    postgres_url: str = Field(description="Postgres URL of the orbit store (a secret: use EnvVar).")

    _engine: Engine | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Connect (retrying transient errors) and bring the schema up to date.

        No pool: Dagster sets the resource up per run worker, step process and sensor tick,
        all short-lived, and uses it in a few short bursts (load an input, store an output);
        a pool would keep a connection idle for the whole step next to the row executor's
        two. Each use opens its own connection and closes it when done.
        """
        self._engine = connect_store(self.postgres_url, pooled=False)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """Close pooled connections so run workers exit without idle sessions left open."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @property
    def engine(self) -> Engine:
        """The engine, connected on first use outside a run (e.g. in a sensor)."""
        if self._engine is None:
            self._engine = connect_store(self.postgres_url, pooled=True)
        return self._engine

    def describe(self) -> str:
        """Where the store is, password masked."""
        return mask_url(self.postgres_url)

    def target(self) -> str:
        """``host:port/database`` with no user or password: safe for event metadata and logs."""
        return safe_target(self.postgres_url)

    def schema_version(self) -> int:
        """The orbit schema version the store is at (connecting brings it up to date)."""
        return status(self.engine).current
