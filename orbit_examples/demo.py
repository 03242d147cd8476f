"""`orbit demo`: ship a few hundred orders, kill a worker partway, watch the sensor recover.

Everything is real: a fresh demo database (``orbit_demo`` unless told otherwise) on the
configured (or embedded) Postgres, the carrier HTTP service and ``dagster-daemon`` as child
processes, the ``shipments`` job launched through Dagster's queue with its fault injection
armed, and the recovery sensor doing its work. The only setting the demo changes is the
sensor interval (5 s instead of 15 s, unless ``ORBIT_RECOVERY_INTERVAL_S`` is set), so the
tour is short. The report is read back from the carrier's own tables and the orbit ledger,
not from what the job says about itself.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from orbit_pipelines.dagster_io.dagster_home import (
    dagster_env,
    dagster_instance,
    prepare_dagster_home,
    shipped_config,
)
from orbit_pipelines.errors import E2008_BAD_CONFIG, OrbitError
from orbit_pipelines.processes import ChildProcesses, wait_for
from orbit_pipelines.recovery.settings import ENV_PREFIX
from orbit_pipelines.store.engine import connect_store, create_store_engine
from orbit_pipelines.store.recoveries import recoveries_for_group
from orbit_pipelines.store.urls import ORBIT_HOME_ENV, mask_url, orbit_home, resolve_url

DEMO_DATABASE = "orbit_demo"
# Tests (and anyone running two demos side by side) pick another name with this variable.
DEMO_DATABASE_ENV = "ORBIT_DEMO_DATABASE"
# The demo drops and recreates its database: only names with this prefix may be used, so a
# typo can never drop somebody's real database.
_DATABASE_NAME = re.compile(r"orbit_demo[a-z0-9_]{0,53}")
INTERVAL_ENV = ENV_PREFIX + "INTERVAL_S"
DEMO_SENSOR_INTERVAL_S = 5
JOB = "shipments"
UI_PORT = 3000
_BIN = Path(sys.executable).parent
_MISMATCH_SAMPLE = 5


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs."""

    orders: int = 300
    shards: int = 2
    kill_after_rows: int = 60
    timeout_s: float = 600.0
    database: str = DEMO_DATABASE
    # None: ORBIT_RECOVERY_INTERVAL_S when set, else DEMO_SENSOR_INTERVAL_S.
    sensor_interval_s: int | None = None


@dataclass(frozen=True)
class DemoReport:
    """What happened, measured at the receiver and in the ledger."""

    orders: int
    shipments_created: int
    duplicate_shipments: int
    orders_tracked: int
    tracking_mismatches: int
    carrier_requests: int
    carrier_repeat_requests: int
    rows_redone: int
    recovery_runs: int
    # What orbit.recoveries says about each recovery: its outcome, or its status while open.
    recovery_outcomes: list[str]
    kill_to_recovery_launch_s: float | None
    sensor_interval_s: int
    wall_time_s: float
    run_group: str
    recovery_run_ids: list[str]
    final_status: str
    database: str
    ui_command: str
    ui_url: str
    mismatch_sample: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        """Why the demo failed, in one line; None when it did not."""
        if self.final_status != "SUCCESS":
            return f"the run group {self.run_group} did not succeed ({self.final_status})"
        if self.duplicate_shipments:
            return f"the carrier created {self.duplicate_shipments} duplicate shipment(s)"
        if self.tracking_mismatches:
            sample = ", ".join(self.mismatch_sample)
            return (
                f"{self.tracking_mismatches} order(s) do not carry the carrier's tracking"
                f" number (e.g. {sample})"
            )
        if self.shipments_created != self.orders:
            return f"{self.shipments_created} shipments for {self.orders} orders"
        return None

    @property
    def ok(self) -> bool:
        """Every order shipped exactly once and carries the carrier's tracking number."""
        return self.reason is None

    def as_dict(self) -> dict[str, Any]:
        """The report with its verdict (``ok``, ``reason``)."""
        return {**asdict(self), "ok": self.ok, "reason": self.reason}

    def as_json(self) -> str:
        """One JSON object."""
        return json.dumps(self.as_dict(), sort_keys=True)

    def as_text(self) -> str:
        """The report a person reads."""
        seconds = (
            f"{self.kill_to_recovery_launch_s:.1f} s (sensor every {self.sensor_interval_s} s)"
            if self.kill_to_recovery_launch_s is not None
            else "?"
        )
        lines = [
            f"orbit demo: {'OK' if self.ok else 'NOT OK: ' + str(self.reason)}",
            f"  orders                          {self.orders}",
            f"  shipments created               {self.shipments_created}",
            f"  duplicate shipments             {self.duplicate_shipments}",
            f"  orders with carrier's tracking  {self.orders_tracked}"
            f" ({self.tracking_mismatches} mismatched)",
            f"  carrier requests received       {self.carrier_requests}"
            f" ({self.carrier_repeat_requests} repeated a key)",
            f"  rows redone after the kill      {self.rows_redone}",
            f"  recovery runs                   {self.recovery_runs}"
            f" (recorded: {', '.join(self.recovery_outcomes) or 'none'})",
            f"  kill -> recovery launch         {seconds}",
            f"  run group                       {self.run_group} ({self.final_status})",
            f"  wall time                       {self.wall_time_s:.0f} s",
            "Look at it in the Dagster UI:",
            f"  {self.ui_command}",
            f"  then open {self.ui_url}",
        ]
        return "\n".join(lines)


def demo_database_name(name: str | None = None) -> str:
    """The demo database: ``name``, else ``$ORBIT_DEMO_DATABASE``, else ``orbit_demo``."""
    chosen = name or os.environ.get(DEMO_DATABASE_ENV) or DEMO_DATABASE
    if not _DATABASE_NAME.fullmatch(chosen):
        raise OrbitError(
            E2008_BAD_CONFIG,
            f"demo database name {chosen!r} is not allowed: the demo drops and recreates it",
            hint="use orbit_demo or a name starting with orbit_demo (lower case, digits, _)",
        )
    return chosen


def _printable(url: str) -> str:
    """The URL to paste into a command: as is when it has no password (embedded), else masked."""
    return url if not make_url(url).password else mask_url(url)


def _fresh_database(server_url: str, database: str) -> str:
    """Drop and create the demo database so the counts are this demo's alone."""
    admin = make_url(server_url).set(drivername="postgresql")
    if admin.database == database:
        # ORBIT_POSTGRES_URL still points at an earlier demo's database (the `orbit dev`
        # line the demo printed): a database cannot be dropped from inside itself.
        admin = admin.set(database="postgres")
    try:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{database}"')
    except psycopg.Error as error:
        raise OrbitError(
            E2008_BAD_CONFIG,
            f"the demo needs to create database {database} on {mask_url(admin)}: {error}",
            hint="use a role that may CREATE DATABASE, or unset ORBIT_POSTGRES_URL (embedded)",
        ) from None
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def drop_demo_database(server_url: str, database: str) -> None:
    """Drop a demo database (tests clean up with this)."""
    admin = make_url(server_url).set(drivername="postgresql")
    if admin.database == database:
        admin = admin.set(database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{demo_database_name(database)}" WITH (FORCE)')


def _sensor_interval(options: DemoOptions) -> int:
    if options.sensor_interval_s is not None:
        return options.sensor_interval_s
    configured = os.environ.get(INTERVAL_ENV)
    return int(configured) if configured else DEMO_SENSOR_INTERVAL_S


def _launch(
    children: ChildProcesses,
    env: dict[str, str],
    csv_path: Path,
    options: DemoOptions,
    run_id: str,
    log_path: Path,
) -> None:
    """``dagster job launch`` (to the daemon's queue), as a child we can always reap: it
    starts its own code server, which must not outlive a Ctrl-C."""
    run_config = {
        "ops": {
            "load_orders": {"config": {"csv_path": str(csv_path)}},
            "shard_orders": {"config": {"shards": options.shards}},
            "ship_shard": {"config": {"kill_after_rows": options.kill_after_rows, "kill_shard": 0}},
        }
    }
    argv = [str(_BIN / "dagster"), "job", "launch", "-w", str(shipped_config("workspace.yaml"))]
    argv += ["-j", JOB, "--run-id", run_id, "--config-json", json.dumps(run_config)]
    log_path.unlink(missing_ok=True)
    proc = children.start(argv, env=env, log_path=log_path)
    try:
        code = proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        code = None
    children.stop(proc)
    if code != 0:
        output = log_path.read_text(errors="replace")
        errors = [line for line in output.splitlines() if line.startswith("Error")]
        detail = errors[-1] if errors else (output.strip()[-300:] or f"exit code {code}")
        raise OrbitError(E2008_BAD_CONFIG, f"could not launch {JOB}: {detail}")


def _group_state(instance: DagsterInstance, engine: Engine, root: str) -> str | None:
    """SUCCESS, HELD (recovery gave up: a person must look) or None while still going."""
    runs = [*instance.get_runs(RunsFilter(tags={"dagster/root_run_id": root}))]
    if (root_run := instance.get_run_by_id(root)) is not None:
        runs.append(root_run)
    if any(r.status == DagsterRunStatus.SUCCESS for r in runs):
        return "SUCCESS"
    finished = {DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    failed = {r.run_id for r in runs if r.status in finished}
    if runs and len(failed) == len(runs):
        with engine.connect() as conn:
            held = [r for r in recoveries_for_group(conn, root) if r.parent_run_id in failed]
        if any(r.status == "held" for r in held):
            return "HELD"
    return None


def _await_recoveries_closed(
    engine: Engine, root: str, interval: int, log: Callable[[str], object]
) -> None:
    """Give the sensor the tick in which it records the recovery's outcome, so the ledger
    (and `orbit status`) shows it finished rather than still launched once the daemon
    stops. Not worth failing the demo for: it only waits a few ticks."""

    def closed() -> bool:
        with engine.connect() as conn:
            return all(r.finished_at is not None for r in recoveries_for_group(conn, root))

    try:
        wait_for(closed, timeout_s=3 * interval + 15, interval_s=0.5, what="")
    except AssertionError:
        log("the sensor has not recorded the recovery's outcome yet; `orbit dev` will")


def _kill_time(instance: DagsterInstance, run_id: str) -> datetime | None:
    """When the injected SIGKILL happened: the executor reports the crashed step at once."""
    failures = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    if not failures:
        return None
    return datetime.fromtimestamp(min(e.timestamp for e in failures)).astimezone()


# A row is "redone" when its handler ran in a run that died before committing it: its
# carrier effect is recorded by another run than the one that committed the row (or was
# attempted more than once), or the row itself took more than one attempt.
_ROWS_REDONE = """
SELECT count(*) FROM orbit.step_rows r
WHERE r.root_run_id = :root
  AND (r.attempt > 1 OR EXISTS (
        SELECT 1 FROM orbit.effects e
        WHERE e.root_run_id = r.root_run_id AND e.step_key = r.step_key
          AND e.row_key = r.row_key
          AND (e.attempts > 1 OR e.run_id IS DISTINCT FROM r.run_id)))
"""

# Orders whose tracking number is not one the carrier assigned to that very order.
_MISMATCHED_ORDERS = """
SELECT o.order_id FROM orbit_examples.orders o
WHERE o.tracking_number IS NULL
   OR NOT EXISTS (
        SELECT 1 FROM carrier.shipments s
        WHERE s.order_id = o.order_id AND s.tracking_number = o.tracking_number)
ORDER BY o.order_id
"""


def _measure(engine: Engine, instance: DagsterInstance, root: str, orders: int) -> dict[str, Any]:
    with engine.connect() as conn:
        shipments = conn.execute(
            text("SELECT count(*), count(DISTINCT order_id) FROM carrier.shipments")
        ).one()
        requests = conn.execute(
            text("SELECT count(*), count(DISTINCT idempotency_key) FROM carrier.requests")
        ).one()
        in_table = conn.execute(text("SELECT count(*) FROM orbit_examples.orders")).scalar_one()
        mismatched = list(conn.execute(text(_MISMATCHED_ORDERS)).scalars())
        redone = conn.execute(text(_ROWS_REDONE), {"root": root}).scalar_one()
        recovery = conn.execute(
            text(
                "SELECT min(launched_at) FROM orbit.recoveries WHERE root_run_id = :root"
                " AND parent_run_id = :root"
            ),
            {"root": root},
        ).scalar_one()
        recoveries = recoveries_for_group(conn, root)
    children = instance.get_runs(RunsFilter(tags={"dagster/root_run_id": root}))
    killed_at = _kill_time(instance, root)
    tracked = int(in_table) - len(mismatched)
    return {
        "shipments_created": int(shipments[0]),
        "duplicate_shipments": int(shipments[0]) - int(shipments[1]),
        "orders_tracked": tracked,
        # Orders that never reached the orders table count as not tracked, too.
        "tracking_mismatches": orders - tracked,
        "mismatch_sample": mismatched[:_MISMATCH_SAMPLE],
        "carrier_requests": int(requests[0]),
        "carrier_repeat_requests": int(requests[0]) - int(requests[1]),
        "rows_redone": int(redone),
        "recovery_runs": len(children),
        "recovery_outcomes": [r.outcome or r.status for r in recoveries],
        # Oldest first: the last one is the run that finished the group.
        "recovery_run_ids": [r.run_id for r in reversed(list(children))],
        "kill_to_recovery_launch_s": round((recovery - killed_at).total_seconds(), 1)
        if recovery is not None and killed_at is not None
        else None,
    }


def _ui_command(url: str) -> str:
    """The `orbit dev` line that shows this demo's database (and, like the demo, ORBIT_HOME)."""
    home = os.environ.get(ORBIT_HOME_ENV)
    prefix = f"{ORBIT_HOME_ENV}='{home}' " if home else ""
    return f"{prefix}ORBIT_POSTGRES_URL='{_printable(url)}' orbit dev"


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the children are stopped either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _alive(children: ChildProcesses, names: dict[int, str], logs: Path) -> None:
    for proc in children.procs:
        if proc.poll() is not None and proc.pid in names:
            raise OrbitError(
                E2008_BAD_CONFIG,
                f"{names[proc.pid]} exited with code {proc.returncode}; see its log in {logs}",
            )


def run_demo(options: DemoOptions, *, log: Callable[[str], object] = print) -> DemoReport:
    """Run the whole demo; every process it starts is stopped before it returns (also on
    an error, Ctrl-C or SIGTERM)."""
    # Imported here: the pipelines import dagster ops, which only the demo needs.
    from orbit_examples.carrier.storage import create_tables as create_carrier_tables
    from orbit_examples.pipelines.example_tables import ensure_tables
    from orbit_examples.pipelines.sample_data import write_orders_csv

    began = time.monotonic()
    database = demo_database_name(options.database)
    interval = _sensor_interval(options)
    url = _fresh_database(resolve_url(), database)
    connect_store(url).dispose()  # orbit's migrations
    # Every table the report reads exists from the start, so a demo that fails early
    # still reports (zeros) instead of tripping over a missing table.
    setup = create_store_engine(url)
    try:
        ensure_tables(setup)
        create_carrier_tables(setup)
    finally:
        setup.dispose()
    work = orbit_home() / "demo" / database
    work.mkdir(parents=True, exist_ok=True)
    # The same DAGSTER_HOME as `orbit dev`, so the UI it prints finds the step logs too.
    home = prepare_dagster_home(orbit_home() / "dagster_home")
    with dagster_instance(home, url):
        pass  # Dagster creates its tables now, not in two racing processes below
    csv_path = write_orders_csv(work / "orders.csv", options.orders)
    env = dagster_env(home, url)
    env["ORBIT_CARRIER_TOKEN"] = secrets.token_urlsafe(16)
    env[INTERVAL_ENV] = str(interval)
    log(f"database {mask_url(url)}; logs in {work}")
    with _sigterm_as_interrupt(), ChildProcesses() as children:
        port_file = work / "carrier.port"
        port_file.unlink(missing_ok=True)
        carrier_argv = [sys.executable, "-m", "orbit_examples.carrier", "--port", "0"]
        carrier = children.start(
            [*carrier_argv, "--port-file", str(port_file)],
            env=env,
            log_path=work / "carrier.log",
        )
        names = {carrier.pid: "the carrier"}

        def listening() -> bool:
            _alive(children, names, work)
            return port_file.exists()

        wait_for(listening, timeout_s=60, what="the carrier to listen")
        env["ORBIT_CARRIER_URL"] = f"http://127.0.0.1:{port_file.read_text().strip()}"
        daemon = children.start(
            [str(_BIN / "dagster-daemon"), "run", "-w", str(shipped_config("workspace.yaml"))],
            env=env,
            log_path=work / "daemon.log",
        )
        names[daemon.pid] = "dagster-daemon"
        root = str(uuid.uuid4())
        log(
            f"launching {JOB} ({options.orders} orders, {options.shards} shards); "
            f"shard 0 SIGKILLs itself after {options.kill_after_rows} rows"
        )
        _launch(children, env, csv_path, options, root, work / "launch.log")
        engine = create_store_engine(url)
        try:
            with dagster_instance(home, url) as instance:
                log(
                    f"waiting for the kill, the recovery sensor (every {interval} s)"
                    " and the recovery run..."
                )
                started = time.monotonic()

                def finished() -> str | None:
                    _alive(children, names, work)
                    return _group_state(instance, engine, root)

                try:
                    final = str(
                        wait_for(
                            finished,
                            timeout_s=options.timeout_s,
                            interval_s=1.0,
                            what="the run group to finish",
                        )
                    )
                except AssertionError:
                    final = f"TIMED_OUT after {options.timeout_s:.0f}s"
                log(f"waited {time.monotonic() - started:.0f}s for the run group: {final}")
                if final == "SUCCESS":
                    _await_recoveries_closed(engine, root, interval, log)
                measured = _measure(engine, instance, root, options.orders)
        finally:
            engine.dispose()
        log("stopping the carrier and dagster-daemon (with its code server and run workers)")
    shown = measured["recovery_run_ids"][-1] if measured["recovery_run_ids"] else root
    return DemoReport(
        orders=options.orders,
        run_group=root,
        final_status=final,
        database=mask_url(url),
        ui_command=_ui_command(url),
        # A recovery run's page shows the whole run group (parent and recoveries) beside it.
        ui_url=f"http://127.0.0.1:{UI_PORT}/runs/{shown}",
        sensor_interval_s=interval,
        wall_time_s=round(time.monotonic() - began, 1),
        **measured,
    )
