"""The `orbit` command: thin wrappers over recovery/ and store/.

Exit codes: 0 ok, 1 something needs a person (or failed), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from orbit_pipelines.cli import auto_recovery, db, demo, dev, health, runs
from orbit_pipelines.cli.database import forget_database
from orbit_pipelines.cli.failures import as_orbit_error
from orbit_pipelines.cli.output import EXIT_USAGE, print_error, print_usage_error
from orbit_pipelines.errors import OrbitError

# Each command module exposes register(subparsers); adding a command is one line here.
COMMAND_MODULES = [dev, demo, db, runs, auto_recovery, health]


class UsageError(Exception):
    """An argument error, raised instead of argparse's print-and-exit so --json can shape it."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, self.format_usage())


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests and --help)."""
    parser = _Parser(
        prog="orbit", description="Crash-safe data pipelines on Dagster: run, inspect, recover."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `orbit` console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in words
    forget_database()
    parser = build_parser()
    try:
        args = parser.parse_args(words)
    except UsageError as error:
        return print_usage_error(error.message, error.usage, as_json=as_json)
    except SystemExit as exit_:
        # --help exits 0; keep that.
        return int(exit_.code or 0)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # every error ends as one coded line, never a traceback
        if os.environ.get("ORBIT_DEBUG") and not isinstance(error, OrbitError):
            raise
        return print_error(as_orbit_error(error), as_json=as_json)
    return code


def run() -> None:
    """`python -m orbit_pipelines.cli`."""
    sys.exit(main())


__all__ = ["EXIT_USAGE", "build_parser", "main"]
