"""The `orbit` command: thin wrappers over recovery/ and store/.

Exit codes: 0 ok, 1 something needs a person (or failed), 2 usage error.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence

from orbit_pipelines.cli.database import forget_database
from orbit_pipelines.cli.failures import as_orbit_error
from orbit_pipelines.cli.output import EXIT_USAGE, print_error, print_usage_error
from orbit_pipelines.errors import OrbitError

# Each command module (orbit_pipelines.cli.<module>) exposes register(subparsers), which adds
# the commands listed beside it, in this order. The table is here, not read from the modules,
# so that `orbit X` imports only X's module: the run commands import Dagster (about a second
# of CPU at start), the demo imports the examples, and `orbit --help` needs neither.
# orbit_pipelines_tests/cli/test_cli_startup.py checks the table against the modules.
COMMANDS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("dev", (("dev", "run the Dagster UI and daemon with the orbit code location"),)),
    (
        "demo",
        (("demo", "ship orders, kill a worker partway, let the sensor recover it, report"),),
    ),
    ("db", (("db", "the orbit schema in Postgres"),)),
    (
        "runs",
        (
            ("check-interrupted", "run groups that are dead, hung, failed or held"),
            ("status", "one run group: steps, rows, recoveries"),
            ("resume", "re-execute from failure now"),
            ("restart", "start the job over from scratch"),
            ("cancel", "stop a run and abandon its group (`--undo` takes it back)"),
            ("recover", "the sensor's decision, for every group, now"),
            (
                "effects",
                "`effects RUN_ID`: in-doubt effects; `effects resolve KEY --succeeded|--failed`",
            ),
        ),
    ),
    (
        "auto_recovery",
        (
            (
                "auto-recovery",
                "show, or turn on/off, automatic recovery by the sensor for every job",
            ),
        ),
    ),
    (
        "health",
        (
            ("metrics", "recovery metrics over a time window"),
            ("doctor", "configuration, schema, connections, ledger consistency; exit 1 on any"),
        ),
    ),
)
COMMAND_MODULES = [module for module, _commands in COMMANDS]


class UsageError(Exception):
    """An argument error, raised instead of argparse's print-and-exit so --json can shape it."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, self.format_usage())


def build_parser(words: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser (also used by tests and --help).

    Without ``words``: every command module registers its commands. With the command line
    ``words``: only the module of the command being run does; the others' commands are
    placeholders with the same name and help, enough for `orbit --help` and for argparse's
    "invalid choice" list, and never parsed (the top-level parser has no option that takes
    a value, so the first word not starting with "-" is the command).
    """
    parser = _Parser(
        prog="orbit", description="Crash-safe data pipelines on Dagster: run, inspect, recover."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    command = None if words is None else next((w for w in words if not w.startswith("-")), "")
    for module_name, commands in COMMANDS:
        if command is None or command in (name for name, _help in commands):
            module = importlib.import_module(f"orbit_pipelines.cli.{module_name}")
            module.register(subparsers)
        else:
            for name, help_ in commands:
                subparsers.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `orbit` console script.

    ``argv`` None (the console script, ``python -m``): this process ends with the command,
    and the garbage collector is managed for a fast start and exit (see ``_start_collecting``).
    Tests pass ``argv`` and call this repeatedly in one process: the collector is left alone.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    whole_process = argv is None
    if whole_process:
        # Imports (Dagster's, for a run command) create a great many objects and next to no
        # garbage; the collector's full passes over them cost ~0.35 CPU s at start.
        gc.disable()
    try:
        return _run_command(words, whole_process)
    finally:
        if whole_process:
            # Whatever is still alive lives until the exit: without this, the interpreter's
            # last collections walk it all once more (~0.4 CPU s after `check-interrupted`
            # at 1,000 groups). atexit handlers (logging's flush, weakref.finalize) and the
            # finalizers of objects freed by reference counting still run; what is left in a
            # reference cycle is not finalized, and the OS closes its sockets and files (the
            # run commands have closed their engine and instance by then).
            gc.freeze()
            gc.enable()  # for a caller that goes on (main() called in-process without argv)


def _start_collecting() -> None:
    """The command's module is imported: freeze what exists (never scanned again) and
    collect from here on, so that a long command (`orbit dev`, `status --watch`) frees its
    cycles as usual."""
    gc.freeze()
    gc.enable()


def _run_command(words: list[str], whole_process: bool) -> int:
    as_json = "--json" in words
    forget_database()
    parser = build_parser(words)
    try:
        args = parser.parse_args(words)
    except UsageError as error:
        return print_usage_error(error.message, error.usage, as_json=as_json)
    except SystemExit as exit_:
        # --help exits 0; keep that.
        return int(exit_.code or 0)
    if whole_process:
        _start_collecting()
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
