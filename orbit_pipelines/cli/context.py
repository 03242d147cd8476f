"""What every run command needs: the orbit store and the Dagster instance on the same database."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dagster import DagsterInstance
from sqlalchemy import Engine

from orbit_pipelines.cli.database import Database, resolve_database
from orbit_pipelines.dagster_io.dagster_home import prepare_dagster_home
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.engine import check_connection, connect_store, create_store_engine
from orbit_pipelines.store.urls import (
    POSTGRES_URL_ENV,
    dagster_storage_url,
    orbit_home,
)


@dataclass
class RunContext:
    """An open store engine, the Dagster instance and the recovery settings in force."""

    database: Database
    engine: Engine
    instance: DagsterInstance
    settings: RecoverySettings

    @property
    def url(self) -> str:
        """The database URL (a secret: print ``database.masked``)."""
        return self.database.url

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()
        self.instance.dispose()


def open_run_context(*, announce: bool = True, migrate: bool = True) -> RunContext:
    """Connect (one clear error if the database is down), then load the Dagster instance.

    Without ``DAGSTER_HOME`` the CLI uses the one ``orbit dev`` prepares, so both see the
    same runs. ``migrate=False`` (for `orbit doctor`) looks at the schema as it is.
    """
    database = resolve_database(announce=announce)
    url = database.url
    # Pooled: a listing asks several questions per run group; a new connection each time
    # cost more than the questions.
    if migrate:
        engine = connect_store(url, pooled=True)
    else:
        engine = create_store_engine(url, pooled=True)
        check_connection(engine)
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(orbit_home() / "dagster_home"))
    # Dagster's storage reads the URL from the environment (dagster.yaml); give it psycopg2's.
    os.environ[POSTGRES_URL_ENV] = dagster_storage_url(url)
    instance = DagsterInstance.get()
    return RunContext(database, engine, instance, RecoverySettings.from_env())
