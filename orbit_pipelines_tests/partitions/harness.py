"""One Dagster deployment of the partitioned-assets test location, shared by a module.

A module-scoped database, DAGSTER_HOME and ``dagster-daemon`` (its code server loads
``orbit_pipelines_tests.partitions.location`` and evaluates the recovery sensor); tests keep
apart by partition. Built on the recovery tests' ``Harness`` (same env recipe and waits).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterEventType, DagsterInstance, EventRecordsFilter
from sqlalchemy import text

from orbit_pipelines.dagster_io.dagster_home import dagster_env, prepare_dagster_home
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines_tests.partitions.location import TEST_TABLES
from orbit_pipelines_tests.postgres import create_database, drop_database
from orbit_pipelines_tests.processes import ChildProcesses
from orbit_pipelines_tests.sensors.harness import REPO_ROOT, Harness

LOCATION = "orbit_partitions"
MODULE = "orbit_pipelines_tests.partitions.location"

# Sensor every 2 s; the injected faults end the run FAILURE at once, so the heartbeat and
# stall timeouts keep their defaults (short ones could mistake a slow step for a dead one).
RECOVERY_ENV = {"ORBIT_RECOVERY_INTERVAL_S": "2", "ORBIT_RECOVERY_BACKOFF_BASE_S": "2"}

# The daemon takes queued runs every 5 s by default.
QUEUE_FAST = """
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""


@dataclass
class PartitionsHarness(Harness):
    """The deployment; ``start_daemon`` once per module."""

    settings_env: dict[str, str] = field(default_factory=lambda: dict(RECOVERY_ENV))

    def __post_init__(self) -> None:
        with self.engine.begin() as conn:
            for ddl in TEST_TABLES:
                conn.execute(text(ddl))
        config = self.home / "dagster.yaml"
        if "run_coordinator:" not in config.read_text():
            config.write_text(config.read_text() + QUEUE_FAST)
        self.workspace = self.tmp / "workspace.yaml"
        self.workspace.write_text(
            "load_from:\n"
            "  - python_module:\n"
            f"      module_name: {MODULE}\n"
            f"      location_name: {LOCATION}\n"
            f"      working_directory: {REPO_ROOT}\n"
        )
        self.instance = DagsterInstance.get()

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

    def failures(self, run_id: str) -> list[str]:
        """Step and run failure messages of a run (causes included), to explain an assertion."""
        found: list[str] = []
        kinds = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
        for entry in self.instance.all_logs(run_id, of_type=kinds):
            event = entry.dagster_event
            found.append(entry.message or "")
            is_step = event is not None and event.event_type == DagsterEventType.STEP_FAILURE
            error = event.step_failure_data.error if is_step and event else None
            while error is not None:
                found.append(error.message.strip())
                error = error.cause
        return found

    def fault_fired_in(self, partition: str) -> str | None:
        """The run in which the partition's fault fired last, if it did."""
        with self.engine.connect() as conn:
            return conn.execute(
                text("SELECT fired_in FROM public.part_faults WHERE partition = :p"),
                {"p": partition},
            ).scalar()

    def effects(self, partition: str) -> dict[int, int]:
        """How many times each row's effect happened for ``partition``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT row_id, count(*) FROM public.part_effects WHERE partition = :p"
                    " GROUP BY row_id"
                ),
                {"p": partition},
            )
            return {int(r[0]): int(r[1]) for r in rows}

    def aggregation_states(self, step_key: str) -> dict[str, dict[str, Any]]:
        """root run → {aggregation name: state} of ``step_key`` in orbit's ledger."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT root_run_id, name, state FROM orbit.aggregation_state"
                    " WHERE step_key = :s"
                ),
                {"s": step_key},
            )
            found: dict[str, dict[str, Any]] = {}
            for root, name, state in rows:
                found.setdefault(root, {})[name] = state
            return found

    def output_roots(self, step_key: str) -> dict[str, set[str]]:
        """root run → runs that stored an output of ``step_key`` (orbit.step_outputs)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT root_run_id, run_id FROM orbit.step_outputs WHERE step_key = :s"),
                {"s": step_key},
            )
            found: dict[str, set[str]] = {}
            for root, run_id in rows:
                found.setdefault(root, set()).add(run_id)
            return found

    def materializations(self, asset: str, partition: str) -> list[tuple[str, dict[str, Any]]]:
        """(run id, metadata values) of each materialization of ``asset``'s ``partition``."""
        records = self.instance.get_event_records(
            EventRecordsFilter(
                DagsterEventType.ASSET_MATERIALIZATION,
                asset_key=AssetKey(asset),
                asset_partitions=[partition],
            )
        )
        found = []
        for record in records:
            mat = record.asset_materialization
            assert mat is not None
            found.append((record.run_id, {k: v.value for k, v in mat.metadata.items()}))
        return found


@contextmanager
def deployment(
    pg_admin_url: str, template: str, tmp: Path, settings_env: dict[str, str] | None = None
) -> Iterator[PartitionsHarness]:
    """Database, DAGSTER_HOME (this process's env points at it), children killed at the end;
    ``settings_env`` replaces the recovery settings."""
    import os

    url = create_database(pg_admin_url, template=template)
    home = prepare_dagster_home(tmp / "dagster_home")
    saved = dict(os.environ)
    os.environ.update(dagster_env(home, url, base={}))
    engine = create_store_engine(url, pooled=True)
    try:
        with ChildProcesses() as children:
            harness = PartitionsHarness(
                home=home,
                db_url=url,
                engine=engine,
                children=children,
                tmp=tmp,
                settings_env=dict(settings_env or RECOVERY_ENV),
            )
            try:
                yield harness
            finally:
                harness.instance.dispose()
    finally:
        engine.dispose()
        os.environ.clear()
        os.environ.update(saved)
        drop_database(pg_admin_url, url)
