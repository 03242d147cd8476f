"""The one test harness for real Dagster processes: a daemon (which starts the code server
and evaluates the recovery sensor), ``dagster dev``, runs launched through the queue with
``dagster job launch``, waits on run status, heartbeats and recoveries, and the questions
every end-to-end test asks afterwards (which steps ran, what the ledger and the event log
say, which processes belong to the deployment).

A test module's harness is a subclass that only configures it: the code location module
and name, the test tables it creates, the recovery settings, a faster run queue, extra
environment, plus the few queries about its own test tables. ``deployment()`` gives a
module-scoped deployment on its own database.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    EventRecordsFilter,
    RunsFilter,
)
from sqlalchemy import Engine, func, select, text

from orbit_pipelines.dagster_io.dagster_home import dagster_env, prepare_dagster_home
from orbit_pipelines.store import tables as orbit_tables
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.heartbeats import Heartbeat, heartbeats_for_runs
from orbit_pipelines.store.recoveries import Recovery, get_recovery
from orbit_pipelines_tests.postgres import create_database, drop_database
from orbit_pipelines_tests.processes import ChildProcesses, wait_for

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENDED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)

# The daemon takes queued runs every 5 s by default; a test that waits for a run and its
# recovery saves most of that.
QUEUE_FAST = """
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""


def workspace_yaml(module: str, location: str) -> str:
    """A workspace that loads ``module`` as the code location ``location``."""
    return (
        "load_from:\n"
        "  - python_module:\n"
        f"      module_name: {module}\n"
        f"      location_name: {location}\n"
        f"      working_directory: {REPO_ROOT}\n"
    )


@dataclass
class Deployment:
    """One Dagster deployment (DAGSTER_HOME, database, code location) of a test.

    Subclasses configure it with the class attributes below; ``settings_env`` (the
    ``ORBIT_RECOVERY_*`` settings every Dagster process gets, replacing any inherited ones)
    and ``extra_env`` may be changed until the daemon starts.
    """

    # The code location: a Python module and its name (or override ``write_workspace``).
    module: ClassVar[str] = ""
    location: ClassVar[str] = ""
    # DDL run once on the test's database (the location's own test tables).
    test_tables: ClassVar[Sequence[str]] = ()
    # Whether dagster.yaml gets the 1 s run queue.
    fast_queue: ClassVar[bool] = False

    home: Path
    db_url: str
    engine: Engine
    children: ChildProcesses
    tmp: Path
    settings_env: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    daemon: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if self.test_tables:
            with self.engine.begin() as conn:
                for ddl in self.test_tables:
                    conn.execute(text(ddl))
        if self.fast_queue:
            config = self.home / "dagster.yaml"
            if "run_coordinator:" not in config.read_text():
                config.write_text(config.read_text() + QUEUE_FAST)
        self.workspace = self.write_workspace()
        self.instance = DagsterInstance.get()

    def write_workspace(self) -> Path:
        """The workspace file every Dagster command of the test names."""
        assert self.module and self.location, f"{type(self).__name__} names no code location"
        path = self.tmp / "workspace.yaml"
        path.write_text(workspace_yaml(self.module, self.location))
        return path

    # -- processes ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment of every Dagster process of the test."""
        env = dagster_env(self.home, self.db_url)
        for key in list(env):
            if key.startswith("ORBIT_RECOVERY_"):
                del env[key]
        env.update(self.settings_env)
        env["PYTHONPATH"] = str(REPO_ROOT)
        env.update(self.extra_env)
        return env

    def start_daemon(self) -> subprocess.Popen[bytes]:
        """``dagster-daemon run``: queue, sensors (in the code server it starts), monitoring."""
        self.daemon = self.children.start(
            [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)],
            env=self.env(),
            cwd=REPO_ROOT,
            log_path=self.tmp / "daemon.log",
        )
        return self.daemon

    def start_dagster_dev(self) -> subprocess.Popen[bytes]:
        """``dagster dev`` (webserver + daemon, each with its own code server) on a free port."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.daemon = self.children.start(
            [str(BIN / "dagster"), "dev", "-w", str(self.workspace), "-p", str(port)],
            env=self.env(),
            cwd=REPO_ROOT,
            log_path=self.tmp / "dagster_dev.log",
        )
        return self.daemon

    def daemon_alive(self) -> bool:
        """Whether the current daemon process still runs."""
        return self.daemon is not None and self.daemon.poll() is None

    def kill_daemon_only(self) -> int:
        """SIGKILL the daemon process alone (its code server and runs are left as they are,
        as when a daemon crashes). Its process group stays in ``children`` for the cleanup."""
        assert self.daemon is not None
        pid = self.daemon.pid
        os.kill(pid, 9)
        self.daemon.wait(timeout=30)
        return pid

    def code_server_pids(self) -> list[int]:
        """Pids of the code servers the daemon started (its child processes)."""
        assert self.daemon is not None
        return descendants(self.daemon.pid, "grpc")

    def ours(self, pid: int) -> bool:
        """Whether ``pid`` is a process of our deployment (in the process group of one of
        the children we started), so a recycled pid of someone else's is never killed."""
        entry = process_table().get(pid)
        return entry is not None and entry[2] in {proc.pid for proc in self.children.procs}

    def run_worker_pids(self) -> list[int]:
        """Run workers of our deployment, wherever their code server now is.

        A code server starts each run worker with multiprocessing (spawn), so run workers
        are the spawned children of a ``dagster api grpc`` process; they stay in the process
        group of the daemon that started that code server even after that daemon died."""
        table = process_table()
        groups = {proc.pid for proc in self.children.procs}
        servers = {
            pid
            for pid, (args, _ppid, pgid) in table.items()
            if "api grpc" in args and pgid in groups
        }
        return [
            pid
            for pid, (args, ppid, _pgid) in table.items()
            if ppid in servers and "spawn_main" in args
        ]

    # -- runs --------------------------------------------------------------------------------

    def launch(self, job_name: str, config: dict[str, object], op: str = "process_rows") -> str:
        """Submit a run whose one row op takes ``config``; returns its id."""
        return self.launch_job(job_name, {"ops": {op: {"config": config}}})

    def launch_job(
        self,
        job_name: str,
        run_config: dict[str, Any] | None = None,
        run_id: str | None = None,
        *,
        tags: dict[str, str] | None = None,
    ) -> str:
        """``dagster job launch`` through the daemon's queue, as the UI would; the run id
        (chosen here, so a fast failure's recovery run cannot be mistaken for it)."""
        run_id = run_id or str(uuid.uuid4())
        argv = [str(BIN / "dagster"), "job", "launch", "-w", str(self.workspace)]
        argv += ["-j", job_name, "--run-id", run_id]
        if run_config is not None:
            argv += ["--config-json", json.dumps(run_config)]
        if tags:
            argv += ["--tags", json.dumps(tags)]
        done = subprocess.run(
            argv,
            env=self.env(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"dagster job launch failed: {done.stderr[-3000:]}"
        return run_id

    def wait_status(
        self, run_id: str, statuses: tuple[DagsterRunStatus, ...], timeout_s: float = 120
    ) -> DagsterRun:
        """Wait until the run reaches one of ``statuses``."""

        def reached() -> DagsterRun | None:
            run = self.instance.get_run_by_id(run_id)
            return run if run is not None and run.status in statuses else None

        return wait_for(reached, timeout_s=timeout_s, what=f"{run_id} in {statuses}")  # type: ignore[return-value]

    def children_of(self, run_id: str) -> list[DagsterRun]:
        """Runs re-executing ``run_id``."""
        return list(self.instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": run_id})))

    def wait_child(self, run_id: str, timeout_s: float = 120) -> DagsterRun:
        """Wait for the recovery run of ``run_id`` to be created."""
        found = wait_for(
            lambda: self.children_of(run_id), timeout_s=timeout_s, what=f"recovery of {run_id}"
        )
        return found[0]  # type: ignore[index]

    def group_runs(self, root_run_id: str) -> list[DagsterRun]:
        """The root run and every run Dagster groups under it."""
        runs = list(self.instance.get_runs(RunsFilter(tags={"dagster/root_run_id": root_run_id})))
        root = self.instance.get_run_by_id(root_run_id)
        return ([root] if root is not None else []) + [r for r in runs if r.run_id != root_run_id]

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

    # -- heartbeats and the ledger -----------------------------------------------------------

    def heartbeats(self, run_ids: list[str]) -> list[Heartbeat]:
        """Heartbeats of these runs' row steps."""
        with self.engine.connect() as conn:
            return heartbeats_for_runs(conn, run_ids)

    def wait_rows(
        self, run_id: str, rows: int, timeout_s: float = 90, step: str = "process_rows"
    ) -> tuple[str, int]:
        """Wait until ``step`` of ``run_id`` beat with >= ``rows`` done; (host, pid)."""

        def ready() -> tuple[str, int] | None:
            for beat in self.heartbeats([run_id]):
                if beat.step_key == step and beat.rows_done >= rows:
                    return beat.host, beat.pid
            return None

        return wait_for(ready, timeout_s=timeout_s, what=f"{rows} rows of {run_id}")  # type: ignore[return-value]

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """The rows of a query on the test's database (its own test tables)."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def counts(self, sql: str, **params: Any) -> dict[Any, int]:
        """``{key: count}`` of a ``SELECT key, count(*) ... GROUP BY key`` query (how many
        times each row's effect happened, in a test table)."""
        return {key: int(n) for key, n in self.rows(sql, **params)}

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

    def output_roots(self, step_key: str) -> dict[str, set[str]]:
        """root run → runs that stored an output of ``step_key`` (orbit.step_outputs)."""
        o = orbit_tables.step_outputs
        with self.engine.connect() as conn:
            rows = conn.execute(select(o.c.root_run_id, o.c.run_id).where(o.c.step_key == step_key))
            found: dict[str, set[str]] = {}
            for root, run_id in rows:
                found.setdefault(root, set()).add(run_id)
            return found

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

    def rows_committed(self, root_run_id: str, step_key: str) -> dict[str, int]:
        """Per run id: rows of ``step_key`` the row ledger holds as committed by that run."""
        r = orbit_tables.row_outcomes
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
        r = orbit_tables.row_outcomes
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        r.c.root_run_id == root_run_id, r.c.step_key == step_key, r.c.attempt > 1
                    )
                ).scalar_one()
            )

    # -- the event log -----------------------------------------------------------------------

    def steps_started(self, run_id: str) -> list[str]:
        """Step keys whose body started in ``run_id`` (Dagster's STEP_START events)."""
        events = self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
        return sorted(e.step_key for e in events if e.step_key)

    def steps_failed(self, run_id: str) -> list[str]:
        """Step keys that failed in ``run_id``."""
        events = self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
        return sorted(e.step_key for e in events if e.step_key)

    def failures(self, run_id: str) -> list[str]:
        """Step failure errors of a run (causes included)."""
        found: list[str] = []
        for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
            found += _error_chain(entry.dagster_event)
        return found

    def explain(self, run_id: str) -> list[str]:
        """Step and run failure messages of a run, with the step errors and their causes:
        what an assertion message needs to say why a run failed."""
        found: list[str] = []
        kinds = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
        for entry in self.instance.all_logs(run_id, of_type=kinds):
            found.append(entry.message or "")
            found += _error_chain(entry.dagster_event)
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


def _error_chain(event: Any) -> list[str]:
    """The step failure error of ``event`` and its causes, outermost first."""
    data = getattr(event, "step_failure_data", None) if event is not None else None
    error = data.error if data is not None else None
    found: list[str] = []
    while error is not None:
        found.append(error.message.strip())
        error = error.cause
    return found


D = TypeVar("D", bound=Deployment)


@contextmanager
def deployment(
    kind: type[D],
    pg_admin_url: str,
    template: str,
    tmp: Path,
    settings_env: dict[str, str] | None = None,
) -> Iterator[D]:
    """A deployment of ``kind`` on a database of its own (for a module-scoped fixture):
    DAGSTER_HOME (this process's env points at it while it lasts), children stopped and
    the database dropped at the end; ``settings_env`` replaces the kind's default."""
    url = create_database(pg_admin_url, template=template)
    home = prepare_dagster_home(tmp / "dagster_home")
    saved = dict(os.environ)
    os.environ.update(dagster_env(home, url, base={}))
    engine = create_store_engine(url, pooled=True)
    try:
        with ChildProcesses() as children:
            made = kind(home=home, db_url=url, engine=engine, children=children, tmp=tmp)
            if settings_env is not None:
                made.settings_env = dict(settings_env)
            try:
                yield made
            finally:
                made.instance.dispose()
    finally:
        engine.dispose()
        os.environ.clear()
        os.environ.update(saved)
        drop_database(pg_admin_url, url)


def process_table() -> dict[int, tuple[str, int, int]]:
    """pid -> (args, ppid, pgid) of every process."""
    out = subprocess.run(
        ["ps", "-e", "-ww", "-o", "pid=,ppid=,pgid=,args="],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    table: dict[int, tuple[str, int, int]] = {}
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4:
            table[int(parts[0])] = (parts[3], int(parts[1]), int(parts[2]))
    return table


def descendants(pid: int, needle: str) -> list[int]:
    """Pids below ``pid`` in the process tree whose command line contains ``needle``."""
    tree: dict[int, list[tuple[int, str]]] = {}
    for child, (args, ppid, _pgid) in process_table().items():
        tree.setdefault(ppid, []).append((child, args))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child, args in tree.get(stack.pop(), []):
            stack.append(child)
            if needle in args:
                found.append(child)
    return found


__all__ = [
    "BIN",
    "ENDED",
    "QUEUE_FAST",
    "REPO_ROOT",
    "Deployment",
    "deployment",
    "descendants",
    "process_table",
    "workspace_yaml",
]
