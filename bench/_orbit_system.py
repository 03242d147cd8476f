"""System (a): orbit_pipelines' row executor. Plugged in once the executor's API exists."""

from __future__ import annotations

from _systems import System


def orbit_unavailable() -> str | None:
    """Why orbit cannot be benchmarked in this tree, or None when it can."""
    return "orbit_pipelines.execution has no row executor yet"


class OrbitSystem(System):
    """(a) orbit_pipelines: not wired yet."""

    name = "orbit"
