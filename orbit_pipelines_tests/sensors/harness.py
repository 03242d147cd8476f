"""The recovery e2e tests' deployment: the test-only code location
(``orbit_pipelines_tests.sensors.e2e_location``) under real Dagster processes, with fast
recovery settings. Everything generic (daemon, launch, waits, process tree) is the one
harness in ``orbit_pipelines_tests.deployment``; this module configures it and adds the
queries about the location's own test tables."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

from orbit_pipelines_tests.deployment import BIN, REPO_ROOT, Deployment, descendants
from orbit_pipelines_tests.sensors.e2e_location import TEST_TABLES

LOCATION = "orbit_e2e"

# Fast settings so each test takes seconds; one test runs with the defaults instead.
FAST = {
    "ORBIT_RECOVERY_INTERVAL_S": "2",
    "ORBIT_RECOVERY_HEARTBEAT_TIMEOUT_S": "5",
    "ORBIT_RECOVERY_STALL_TIMEOUT_S": "6",
    "ORBIT_RECOVERY_BACKOFF_BASE_S": "2",
    "ORBIT_RECOVERY_TERMINATE_WAIT_S": "3",
}


@dataclass
class Harness(Deployment):
    """One test's Dagster deployment of the e2e location on its own database."""

    module: ClassVar[str] = "orbit_pipelines_tests.sensors.e2e_location"
    location: ClassVar[str] = LOCATION
    test_tables: ClassVar[tuple[str, ...]] = tuple(TEST_TABLES)

    settings_env: dict[str, str] = field(default_factory=lambda: dict(FAST))

    def effects_per_row(self, root_run_id: str) -> dict[int, int]:
        """How many times each row's effect happened."""
        return self.counts(
            "SELECT row_no, count(*) FROM public.e2e_effects WHERE root_run_id = :g"
            " GROUP BY row_no",
            g=root_run_id,
        )

    def step_runs(self, root_run_id: str) -> list[tuple[str, str]]:
        """(run_id, step) for every time a step body started in the group."""
        return [
            (run_id, step)
            for run_id, step in self.rows(
                "SELECT run_id, step_key FROM public.e2e_step_runs WHERE root_run_id = :g"
                " ORDER BY at",
                g=root_run_id,
            )
        ]


def seconds_since(start: float) -> float:
    """Wall-clock seconds since ``time.monotonic()`` value ``start``."""
    return time.monotonic() - start


# Kept for the tests and benchmarks that import it from here.
_descendants = descendants

__all__ = ["BIN", "FAST", "LOCATION", "REPO_ROOT", "Harness", "_descendants", "seconds_since"]
