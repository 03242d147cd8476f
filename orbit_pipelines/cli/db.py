"""`orbit db upgrade` and `orbit db check`."""

from __future__ import annotations

import argparse
from typing import Any

from orbit_pipelines.cli.output import EXIT_FAILURE, EXIT_OK, print_json
from orbit_pipelines.store.engine import check_connection, create_store_engine
from orbit_pipelines.store.migrations import status, upgrade
from orbit_pipelines.store.urls import mask_url, resolve_url


def register(subparsers: Any) -> None:
    """Add the `db` command group."""
    db = subparsers.add_parser("db", help="the orbit schema in Postgres")
    db_sub = db.add_subparsers(dest="db_command", metavar="SUBCOMMAND")
    db_sub.required = True

    up = db_sub.add_parser("upgrade", help="apply pending migrations")
    up.set_defaults(handler=cmd_upgrade)

    check = db_sub.add_parser("check", help="exit 1 unless the schema is current (changes nothing)")
    check.add_argument("--json", action="store_true", help="print a JSON object")
    check.set_defaults(handler=cmd_check)


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Apply pending migrations and say which."""
    url = resolve_url()
    engine = create_store_engine(url)
    check_connection(engine)
    applied = upgrade(engine)
    state = status(engine)
    engine.dispose()
    print(f"database: {mask_url(url)}")
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
    else:
        print("nothing to apply")
    print(state.describe())
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Report the schema state without changing it."""
    url = resolve_url()
    engine = create_store_engine(url)
    check_connection(engine)
    state = status(engine)
    engine.dispose()
    if args.json:
        print_json(
            {
                "database": mask_url(url),
                "current": state.current,
                "latest": state.latest,
                "is_current": state.is_current,
                "pending": [f"{m.version:04d}_{m.name}" for m in state.pending],
            }
        )
    else:
        print(f"database: {mask_url(url)}")
        print(state.describe())
    return EXIT_OK if state.is_current else EXIT_FAILURE
