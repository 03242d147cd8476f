"""How the CLI prints: one clear line per error, JSON when asked."""

from __future__ import annotations

import json
import sys
from typing import Any

from orbit_pipelines.errors import OrbitError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def print_error(error: OrbitError) -> None:
    """``error: E-2001 ...`` on stderr, with the hint on a second line."""
    print(f"error: {error.render()}", file=sys.stderr)


def print_json(payload: Any) -> None:
    """One JSON document on stdout."""
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))
