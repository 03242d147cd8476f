"""The `orbit` command: thin wrappers over recovery/ and store/.

Exit codes: 0 ok, 1 something needs a person (or failed), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from orbit_pipelines.cli import auto_recovery, db, demo, dev, runs
from orbit_pipelines.cli.output import EXIT_FAILURE, EXIT_USAGE, print_error
from orbit_pipelines.errors import OrbitError

# Each command module exposes register(subparsers); adding a command is one line here.
COMMAND_MODULES = [dev, demo, db, runs, auto_recovery]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests and --help)."""
    parser = argparse.ArgumentParser(
        prog="orbit", description="Crash-safe data pipelines on Dagster: run, inspect, recover."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `orbit` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        # argparse exits 2 on usage errors and 0 on --help; keep those codes.
        return int(exit_.code or 0)
    try:
        code: int = args.handler(args)
    except OrbitError as error:
        print_error(error)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return code


def run() -> None:
    """`python -m orbit_pipelines.cli`."""
    sys.exit(main())


__all__ = ["EXIT_USAGE", "build_parser", "main"]
