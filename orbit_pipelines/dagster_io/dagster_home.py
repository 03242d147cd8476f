"""A DAGSTER_HOME whose instance keeps everything in orbit's Postgres.

``orbit dev``, ``orbit demo`` and the end-to-end tests all run real Dagster processes
(webserver, daemon, code server, run workers). They share one recipe: copy the shipped
``dagster.yaml`` into a home directory, and give every process the environment that
points it at the database.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from dagster import DagsterInstance

from orbit_pipelines.store.urls import POSTGRES_URL_ENV, dagster_storage_url


def shipped_config(name: str) -> Path:
    """Path of a file in ``orbit_pipelines/config`` (``dagster.yaml``, ``workspace.yaml``)."""
    return Path(str(resources.files("orbit_pipelines.config").joinpath(name)))


def prepare_dagster_home(home: Path) -> Path:
    """Create ``home`` with our ``dagster.yaml`` in it (overwritten, so upgrades apply)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped_config("dagster.yaml"), home / "dagster.yaml")
    return home


def dagster_env(
    home: Path, postgres_url: str, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment for a Dagster process: its home, and the database in libpq form."""
    env = dict(os.environ if base is None else base)
    env["DAGSTER_HOME"] = str(home)
    env[POSTGRES_URL_ENV] = dagster_storage_url(postgres_url)
    return env


@contextmanager
def dagster_instance(home: Path, postgres_url: str) -> Iterator[DagsterInstance]:
    """A DagsterInstance on ``home`` and ``postgres_url``, for code that is not itself a
    Dagster process (the demo, test fixtures). dagster.yaml reads the storage URL from the
    environment, so it is set while the instance is created and restored afterwards."""
    env = dagster_env(home, postgres_url, base={})
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        instance = DagsterInstance.from_config(str(home))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        yield instance
    finally:
        instance.dispose()
