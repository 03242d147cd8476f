"""Bring up (and always tear down) everything a chaos run needs, on our own Postgres."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy import Engine

from orbit_examples.carrier import storage as carrier_storage
from orbit_examples.pipelines import example_tables
from orbit_pipelines.dagster_io.dagster_home import (
    dagster_env,
    dagster_instance,
    prepare_dagster_home,
)
from orbit_pipelines.processes import ChildProcesses
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.migrations import upgrade
from orbit_pipelines_tests.carrier.running import start_carrier
from orbit_pipelines_tests.chaos.deployment import ChaosHarness
from orbit_pipelines_tests.chaos.own_postgres import OwnPostgres
from orbit_pipelines_tests.postgres import with_database

DATABASE = "orbit_chaos"


@dataclass
class World:
    """Our Postgres, the database URL, the harness (daemon, carrier) and the scratch dir."""

    postgres: OwnPostgres
    db_url: str
    harness: ChaosHarness
    engine: Engine
    scratch: Path


def create_chaos_database(admin_url: str, scratch: Path) -> str:
    """A database with the orbit schema, Dagster's tables, the example and carrier tables."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    url = with_database(admin_url, DATABASE)
    engine = create_store_engine(url)
    try:
        upgrade(engine)
        example_tables.ensure_tables(engine)
        carrier_storage.create_tables(engine)
    finally:
        engine.dispose()
    # Dagster creates its storage tables on first use: do it once, before processes race.
    with dagster_instance(prepare_dagster_home(scratch / "schema_home"), url):
        pass
    return url


@contextmanager
def chaos_world(scratch: Path | None = None, *, keep: bool = False) -> Iterator[World]:
    """Start our Postgres, the carrier and a daemon; stop every process by pid on exit
    (also on an exception or Ctrl-C) and delete the scratch dir unless ``keep``."""
    root = scratch or Path(tempfile.mkdtemp(prefix="orbit_chaos_"))
    root.mkdir(parents=True, exist_ok=True)
    saved = dict(os.environ)
    with ChildProcesses() as children:
        postgres = OwnPostgres(children, root / "pg")
        engine: Engine | None = None
        try:
            postgres.init().start()
            url = create_chaos_database(postgres.url, root)
            home = prepare_dagster_home(root / "dagster_home")
            # The harness's DagsterInstance.get() and the CLI helpers read these.
            os.environ.update(dagster_env(home, url, base={}))
            engine = create_store_engine(url, pooled=True)
            harness = ChaosHarness(
                home=home, db_url=url, engine=engine, children=children, tmp=root
            )
            harness.carrier = start_carrier(children, url, root / "carrier")
            harness.start_daemon()
            yield World(postgres, url, harness, engine, root)
        finally:
            if engine is not None:
                engine.dispose()
            # Runs and daemons first (they hold connections), Postgres last.
            for proc in reversed(list(children.procs)):
                if proc is not postgres.proc:
                    children.stop(proc)
            postgres.stop()
            os.environ.clear()
            os.environ.update(saved)
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
