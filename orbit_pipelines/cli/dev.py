"""`orbit dev`: Postgres (embedded unless ORBIT_POSTGRES_URL is set), then `dagster dev`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from orbit_pipelines.cli.database import resolve_database
from orbit_pipelines.dagster_io.dagster_home import (
    dagster_env,
    prepare_dagster_home,
    shipped_config,
)
from orbit_pipelines.store.engine import connect_store
from orbit_pipelines.store.urls import orbit_home


def register(subparsers: Any) -> None:
    """Add the `dev` command."""
    dev = subparsers.add_parser(
        "dev", help="run the Dagster UI and daemon with the orbit code location"
    )
    dev.add_argument("--host", default="127.0.0.1", help="web UI host (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=3000, help="web UI port (default 3000)")
    dev.set_defaults(handler=cmd_dev)


def cmd_dev(args: argparse.Namespace) -> int:
    """Prepare the database and DAGSTER_HOME, then replace this process with `dagster dev`."""
    database = resolve_database(announce=False)
    url = database.url
    connect_store(url).dispose()  # fail here, clearly, before Dagster starts
    home = prepare_dagster_home(orbit_home() / "dagster_home")
    env = dagster_env(home, url)
    print(f"orbit: database {database.describe()}")
    print(f"orbit: DAGSTER_HOME {home}")
    print(f"orbit: web UI on http://{args.host}:{args.port}", flush=True)
    argv = [
        sys.executable, "-m", "dagster", "dev",
        "-w", str(shipped_config("workspace.yaml")),
        "-h", args.host, "-p", str(args.port),
    ]  # fmt: skip
    # exec: Ctrl-C and SIGTERM reach dagster dev directly, which stops its own children.
    os.execvpe(argv[0], argv, env)
