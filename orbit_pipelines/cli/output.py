"""How the CLI prints: one clear line per error, JSON when asked (errors included)."""

from __future__ import annotations

import json
import sys
from typing import Any

from orbit_pipelines.errors import E1010_UNKNOWN_RUN, OrbitError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# Errors that mean "the command was given something that does not exist": usage, not a
# failure that needs a person.
_USAGE_CODES = frozenset({E1010_UNKNOWN_RUN.code})


def exit_code_for(error: OrbitError) -> int:
    """The exit code an error ends the command with (README: 0 ok, 1 needs a person, 2 usage)."""
    return EXIT_USAGE if error.code in _USAGE_CODES else EXIT_FAILURE


def error_json(code: str, message: str, hint: str | None, exit_code: int) -> dict[str, Any]:
    """The object an error prints under --json."""
    # Here, not at the top: orbit_pipelines.store imports SQLAlchemy, which `orbit --help`
    # and a usage error do not need.
    from orbit_pipelines.store.urls import mask_secrets

    return {
        "error": {"code": code, "message": mask_secrets(message), "hint": hint},
        "exit_code": exit_code,
    }


def print_error(error: OrbitError, *, as_json: bool = False) -> int:
    """``error: E-2001 ...`` on stderr (hint on a second line), or a JSON object on stdout
    under --json; returns the exit code."""
    from orbit_pipelines.store.urls import mask_secrets

    code = exit_code_for(error)
    if as_json:
        print_json(error_json(error.code, error.message, error.hint, code))
    else:
        print(f"error: {mask_secrets(error.render())}", file=sys.stderr)
    return code


def print_usage_error(message: str, usage: str, *, as_json: bool = False) -> int:
    """An argument error: argparse's wording, as text or JSON; exit 2."""
    if as_json:
        print_json(error_json("usage", message, usage.strip() or None, EXIT_USAGE))
    else:
        print(f"{usage.rstrip()}\norbit: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def print_json(payload: Any) -> None:
    """One JSON document on stdout; a dict also says which database it is about."""
    from orbit_pipelines.cli.database import current_database

    database = current_database()
    if isinstance(payload, dict) and database is not None:
        payload = {**payload, "database": database.masked, "embedded": database.embedded}
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))
