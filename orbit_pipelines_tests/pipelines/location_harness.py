"""The real code location (``orbit_examples.definitions``) under a real ``dagster-daemon``.

The end-to-end tests of the example jobs share this: a daemon whose code server loads our
definitions and evaluates the recovery sensor, runs launched through Dagster's queue with
``dagster job launch``, and the questions every such test asks afterwards — which steps a
run started, what a step's output metadata says, which run stored a checkpointed output.

It extends the recovery tests' ``Harness`` (same env recipe, daemon start, waits), pointing
it at the shipped code location instead of the test-only one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus
from sqlalchemy import func, select

from orbit_pipelines.store import tables as orbit_tables
from orbit_pipelines.store.recoveries import Recovery, get_recovery
from orbit_pipelines_tests.processes import wait_for
from orbit_pipelines_tests.sensors.harness import REPO_ROOT, Harness

LOCATION = "orbit_pipelines"
MODULE = "orbit_examples.definitions"
# How Dagster's multiprocess executor reports a step whose process was SIGKILLed.
CRASH = "dagster._core.executor.child_process_executor.ChildProcessCrashException"
ENDED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)

# A short sensor interval so a test takes seconds. The injected kill makes the run FAILURE
# at once, so the heartbeat/stall timeouts stay at their defaults: short ones could take a
# slow step on a loaded 2-core box for a dead one and start a second recovery.
RECOVERY_ENV = {
    "ORBIT_RECOVERY_INTERVAL_S": "2",
    "ORBIT_RECOVERY_BACKOFF_BASE_S": "2",
}


# The daemon takes queued runs every 5 s by default; each test waits for two of them.
QUEUE_FAST = """
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""


@dataclass
class LocationHarness(Harness):
    """A Dagster deployment of ``orbit_examples.definitions`` on one test's database."""

    settings_env: dict[str, str] = field(default_factory=lambda: dict(RECOVERY_ENV))

    def __post_init__(self) -> None:
        # Not the parent's: no test tables, and the workspace names the real location.
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

    def recovered(self, root_run_id: str, timeout_s: float = 180) -> DagsterRun:
        """Wait for the run to fail and for its one recovery run to end; check that the
        recovery succeeded as a from-failure re-execution in the same run group."""
        parent = self.wait_status(root_run_id, ENDED, timeout_s=timeout_s)
        assert parent.status == DagsterRunStatus.FAILURE, parent.status
        child = self.wait_child(root_run_id, timeout_s=timeout_s)
        child = self.wait_status(child.run_id, ENDED, timeout_s=timeout_s)
        assert child.status == DagsterRunStatus.SUCCESS, (child.status, self.failures(child.run_id))
        assert [c.run_id for c in self.children_of(root_run_id)] == [child.run_id]
        assert self.children_of(child.run_id) == []
        assert child.parent_run_id == root_run_id and child.root_run_id == root_run_id
        assert child.tags["orbit/recovery_of"] == root_run_id
        assert child.tags["orbit/attempt"] == "1"
        group = self.instance.get_run_group(child.run_id)
        assert group is not None and group[0] == root_run_id
        assert {r.run_id for r in group[1]} == {root_run_id, child.run_id}
        # orbit's own record of the decision: found as a failed run, launched once, closed.
        row = self.wait_recovery(root_run_id, "succeeded")
        assert (row.reason, row.attempt, row.recovery_run_id) == ("failed", 1, child.run_id), row
        return child

    def wait_recovery(self, run_id: str, status: str, timeout_s: float = 120) -> Recovery:
        """Wait until the recovery decision recorded for ``run_id`` has ``status``."""

        def found() -> Recovery | None:
            with self.engine.connect() as conn:
                row = get_recovery(conn, run_id)
            return row if row is not None and row.status == status else None

        return wait_for(found, timeout_s=timeout_s, what=f"recovery of {run_id} {status}")  # type: ignore[return-value]

    def steps_started(self, run_id: str) -> list[str]:
        """Step keys whose body started in ``run_id`` (Dagster's STEP_START events)."""
        events = self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
        return sorted(e.step_key for e in events if e.step_key)

    def steps_failed(self, run_id: str) -> list[str]:
        """Step keys that failed in ``run_id``."""
        events = self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
        return sorted(e.step_key for e in events if e.step_key)

    def failures(self, run_id: str) -> list[str]:
        """Step failure errors of a run (causes included), to explain an assertion."""
        found: list[str] = []
        for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
            event = entry.dagster_event
            error = event.step_failure_data.error if event and event.step_failure_data else None
            while error is not None:
                found.append(error.message.strip())
                error = error.cause
        return found

    def output_metadata(self, run_id: str, step_key: str) -> dict[str, Any]:
        """Metadata values of ``step_key``'s outputs in ``run_id``."""
        found: dict[str, Any] = {}
        for event in self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_OUTPUT):
            data = event.dagster_event
            if data is None or data.step_key != step_key or data.step_output_data is None:
                continue
            found.update({k: v.value for k, v in data.step_output_data.metadata.items()})
        return found

    def messages(self, run_id: str) -> list[str]:
        """Every log message of a run (user logs included)."""
        return [e.user_message for e in self.instance.all_logs(run_id)]

    def stored_outputs(self, root_run_id: str) -> list[tuple[str, str, str, str]]:
        """(run_id, step_key, output_name, mapping_key) of every checkpointed output."""
        o = orbit_tables.step_outputs
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(o.c.run_id, o.c.step_key, o.c.output_name, o.c.mapping_key)
                .where(o.c.root_run_id == root_run_id)
                .order_by(o.c.step_key, o.c.output_name, o.c.mapping_key)
            )
            return [(r[0], r[1], r[2], r[3]) for r in rows]

    def rows_committed(self, root_run_id: str, step_key: str) -> dict[str, int]:
        """Per run id: rows of ``step_key`` the row ledger holds as committed by that run."""
        r = orbit_tables.step_rows
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(r.c.run_id, r.c.status)
                .where(r.c.root_run_id == root_run_id, r.c.step_key == step_key)
                .where(r.c.status.in_(("done", "quarantined")))
            )
            counts: dict[str, int] = {}
            for run_id, _status in rows:
                counts[run_id] = counts.get(run_id, 0) + 1
            return counts

    def rows_recommitted(self, root_run_id: str, step_key: str) -> int:
        """Rows of ``step_key`` committed more than once (the ledger's attempt > 1)."""
        r = orbit_tables.step_rows
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        r.c.root_run_id == root_run_id, r.c.step_key == step_key, r.c.attempt > 1
                    )
                ).scalar_one()
            )

    def timeline(self, root_run_id: str, child_run_id: str) -> str:
        """Where the seconds went: queue, run, kill to recovery launch, recovery run."""
        parent = self.instance.get_run_record_by_id(root_run_id)
        child = self.instance.get_run_record_by_id(child_run_id)
        assert parent is not None and child is not None
        created = parent.create_timestamp.timestamp()
        parts = {
            "queued": (parent.start_time or created) - created,
            "first run": (parent.end_time or 0) - (parent.start_time or 0),
            "failure -> recovery created": child.create_timestamp.timestamp()
            - (parent.end_time or 0),
            "recovery queued": (child.start_time or 0) - child.create_timestamp.timestamp(),
            "recovery run": (child.end_time or 0) - (child.start_time or 0),
        }
        return ", ".join(f"{name} {seconds:.1f}s" for name, seconds in parts.items())
