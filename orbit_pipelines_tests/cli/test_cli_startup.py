"""The `orbit` command starts without importing what it does not run: Dagster, the store's
SQLAlchemy, pandas, pyarrow, psutil and the examples load with the command that needs them.

Importing Dagster alone costs about 0.6 CPU seconds; `orbit --help` used to pay for all of
it (1.1-1.5 s). Each test runs a fresh interpreter, because this one has imported all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orbit_pipelines.cli import COMMANDS, build_parser

# Modules a command imports when it runs, never at `import orbit_pipelines.cli`.
HEAVY = (
    "dagster",
    "dagster_postgres",
    "sqlalchemy",
    "psycopg",
    "alembic",
    "pandas",
    "pyarrow",
    "psutil",
    "orbit_examples",
    "orbit_pipelines.cli.demo_runner",
    "orbit_pipelines.cli.runs",
)


def _imported_after(code: str) -> list[str]:
    """The HEAVY modules in sys.modules after ``code`` runs in a fresh interpreter."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    )
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_cli_imports_no_command() -> None:
    assert _imported_after("import orbit_pipelines.cli") == []


# Not under --json: a JSON error is masked by orbit_pipelines.store.urls, whose package imports
# the store's engine (SQLAlchemy, psycopg).
@pytest.mark.parametrize("words", [["--help"], [], ["no-such-command"], ["-h", "x"]])
def test_help_and_usage_errors_import_no_command(words: list[str]) -> None:
    code = (
        "import contextlib, io\nfrom orbit_pipelines.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), "
        "contextlib.redirect_stderr(io.StringIO()):\n"
        f"    main({words!r})"
    )
    assert _imported_after(code) == []


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_the_command_table_is_what_the_modules_register() -> None:
    """`orbit --help` prints the table; it must say what the modules register, in order."""
    registered = [(a.dest, a.help) for a in _subcommands(build_parser())._choices_actions]
    assert registered == [command for _module, commands in COMMANDS for command in commands]


def test_a_command_parses_as_with_every_module_registered() -> None:
    """The parser built for one command line has that command's real parser."""
    full = _subcommands(build_parser()).choices
    for _module, commands in COMMANDS:
        for name, _help in commands:
            lazy = _subcommands(build_parser([name, "--json"])).choices
            assert lazy[name].format_help() == full[name].format_help(), name


def test_the_command_as_a_process_says_what_it_says_in_process(dagster_home: Path) -> None:
    """``python -m orbit_pipelines.cli`` (argv from the command line) is the path that turns
    the garbage collector off while importing and freezes it at the end: same answers."""

    def orbit(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orbit_pipelines.cli", *words],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ),
        )

    listed = orbit("check-interrupted", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["interrupted"] == []
    assert "orbit: database" in listed.stderr
    helped = orbit("--help")
    assert helped.returncode == 0
    assert helped.stdout == build_parser().format_help()
    wrong = orbit("no-such-command")
    assert wrong.returncode == 2
    assert "invalid choice: 'no-such-command'" in wrong.stderr


def test_main_in_process_without_argv_leaves_the_collector_on() -> None:
    code = (
        "import contextlib, gc, io, sys\nfrom orbit_pipelines.cli import main\n"
        "sys.argv = ['orbit', '--help']\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    main()\n"
        "print(gc.isenabled())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.split() == ["True"]
