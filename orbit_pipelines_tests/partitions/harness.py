"""One Dagster deployment of the partitioned-assets test location, shared by a module.

A module-scoped database, DAGSTER_HOME and ``dagster-daemon`` (its code server loads
``orbit_pipelines_tests.partitions.location`` and evaluates the recovery sensor); tests keep
apart by partition. The one harness of ``orbit_pipelines_tests.deployment`` configured for
this location, plus the queries about its fault and effect tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from sqlalchemy import text

from orbit_pipelines_tests import deployment as _deployment
from orbit_pipelines_tests.deployment import QUEUE_FAST, Deployment
from orbit_pipelines_tests.partitions.location import TEST_TABLES

LOCATION = "orbit_partitions"
MODULE = "orbit_pipelines_tests.partitions.location"

# Sensor every 2 s; the injected faults end the run FAILURE at once, so the heartbeat and
# stall timeouts keep their defaults (short ones could mistake a slow step for a dead one).
RECOVERY_ENV = {"ORBIT_RECOVERY_INTERVAL_S": "2", "ORBIT_RECOVERY_BACKOFF_BASE_S": "2"}


@dataclass
class PartitionsHarness(Deployment):
    """The deployment; ``start_daemon`` once per module."""

    module: ClassVar[str] = MODULE
    location: ClassVar[str] = LOCATION
    test_tables: ClassVar[tuple[str, ...]] = tuple(TEST_TABLES)
    fast_queue: ClassVar[bool] = True

    settings_env: dict[str, str] = field(default_factory=lambda: dict(RECOVERY_ENV))

    def failures(self, run_id: str) -> list[str]:
        """Step and run failure messages of a run (causes included), to explain an assertion."""
        return self.explain(run_id)

    def add_fault(self, partition: str, kind: str, after_rows: int, times: int = 1) -> None:
        """Arm a fault for the first ``times`` attempts of ``order_totals`` on ``partition``."""
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO public.part_faults (partition, kind, after_rows, times)"
                    " VALUES (:p, :k, :n, :t)"
                ),
                {"p": partition, "k": kind, "n": after_rows, "t": times},
            )

    def fault_fired_in(self, partition: str) -> str | None:
        """The run in which the partition's fault fired last, if it did."""
        with self.engine.connect() as conn:
            return conn.execute(
                text("SELECT fired_in FROM public.part_faults WHERE partition = :p"),
                {"p": partition},
            ).scalar()

    def effects(self, partition: str) -> dict[int, int]:
        """How many times each row's effect happened for ``partition``."""
        return self.counts(
            "SELECT row_id, count(*) FROM public.part_effects WHERE partition = :p GROUP BY row_id",
            p=partition,
        )


@contextmanager
def deployment(
    pg_admin_url: str, template: str, tmp: Path, settings_env: dict[str, str] | None = None
) -> Iterator[PartitionsHarness]:
    """Database, DAGSTER_HOME (this process's env points at it), children killed at the end;
    ``settings_env`` replaces the recovery settings."""
    with _deployment.deployment(
        PartitionsHarness, pg_admin_url, template, tmp, settings_env or None
    ) as harness:
        yield harness


__all__ = ["LOCATION", "MODULE", "QUEUE_FAST", "RECOVERY_ENV", "PartitionsHarness", "deployment"]
