"""A DAGSTER_HOME whose instance keeps everything in orbit's Postgres.

``orbit dev``, ``orbit demo`` and the end-to-end tests all run real Dagster processes
(webserver, daemon, code server, run workers). They share one recipe: copy the shipped
``dagster.yaml`` into a home directory, and give every process the environment that
points it at the database.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

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
