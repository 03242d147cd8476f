"""`orbit demo`: ship a few hundred orders, kill a worker partway, watch the sensor recover.

Everything is real: a fresh ``orbit_demo`` database on the configured (or embedded) Postgres,
the carrier HTTP service and ``dagster-daemon`` as child processes, the ``shipments`` job
launched through Dagster's queue with its fault injection armed, and the recovery sensor
doing its work with default settings. The report is read back from the carrier's own tables
and the orbit ledger, not from what the job says about itself.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
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
from orbit_pipelines.errors import E2008_BAD_CONFIG, E4001_STEP_FAILED, OrbitError
from orbit_pipelines.processes import ChildProcesses, wait_for
from orbit_pipelines.store.engine import connect_store, create_store_engine
from orbit_pipelines.store.urls import mask_url, orbit_home, resolve_url

DEMO_DATABASE = "orbit_demo"
JOB = "shipments"
_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs."""

    orders: int = 300
    shards: int = 2
    kill_after_rows: int = 60
    timeout_s: float = 600.0


@dataclass(frozen=True)
class DemoReport:
    """What happened, measured at the receiver and in the ledger."""

    orders: int
    shipments_created: int
    duplicate_shipments: int
    orders_with_carrier_tracking: int
    carrier_requests: int
    rows_redone: int
    recovery_runs: int
    kill_to_recovery_launch_s: float | None
    run_group: str
    final_status: str
    database: str
    ui_command: str

    @property
    def ok(self) -> bool:
        """Every order shipped exactly once and carries the carrier's tracking number."""
        return (
            self.final_status == "SUCCESS"
            and self.duplicate_shipments == 0
            and self.shipments_created == self.orders
            and self.orders_with_carrier_tracking == self.orders
        )

    def as_json(self) -> str:
        """One JSON object."""
        return json.dumps({**asdict(self), "ok": self.ok}, sort_keys=True)

    def as_text(self) -> str:
        """The report a person reads."""
        seconds = (
            f"{self.kill_to_recovery_launch_s:.1f}"
            if self.kill_to_recovery_launch_s is not None
            else "?"
        )
        verdict = "OK" if self.ok else "NOT OK"
        return "\n".join(
            [
                f"orbit demo: {verdict}",
                f"  orders                         {self.orders}",
                f"  shipments created              {self.shipments_created}",
                f"  duplicate shipments            {self.duplicate_shipments}",
                f"  orders with carrier's tracking {self.orders_with_carrier_tracking}",
                f"  carrier requests received      {self.carrier_requests}",
                f"  rows redone after the kill     {self.rows_redone}",
                f"  recovery runs                  {self.recovery_runs}",
                f"  kill -> recovery launch        {seconds} s",
                f"  run group                      {self.run_group} ({self.final_status})",
                "Look at it in the Dagster UI:",
                f"  {self.ui_command}",
                f"  then open http://127.0.0.1:3000/runs/{self.run_group}",
            ]
        )


def _printable(url: str) -> str:
    """The URL to paste into a command: as is when it has no password (embedded), else masked."""
    return url if not make_url(url).password else mask_url(url)


def _fresh_database(server_url: str) -> str:
    """Drop and create ``orbit_demo`` so the counts are this demo's alone."""
    admin = make_url(server_url).set(drivername="postgresql")
    try:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    except psycopg.Error as error:
        raise OrbitError(
            E2008_BAD_CONFIG,
            f"the demo needs to create database {DEMO_DATABASE} on {mask_url(admin)}: {error}",
            hint="use a role that may CREATE DATABASE, or unset ORBIT_POSTGRES_URL (embedded)",
        ) from None
    return make_url(server_url).set(database=DEMO_DATABASE).render_as_string(hide_password=False)


def _launch(env: dict[str, str], csv_path: Path, options: DemoOptions, run_id: str) -> None:
    run_config = {
        "ops": {
            "load_orders": {"config": {"csv_path": str(csv_path)}},
            "shard_orders": {"config": {"shards": options.shards}},
            "ship_shard": {"config": {"kill_after_rows": options.kill_after_rows, "kill_shard": 0}},
        }
    }
    argv = [str(_BIN / "dagster"), "job", "launch", "-w", str(shipped_config("workspace.yaml"))]
    argv += ["-j", JOB, "--run-id", run_id, "--config-json", json.dumps(run_config)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
        raise OrbitError(
            E2008_BAD_CONFIG,
            f"could not launch {JOB}: {errors[-1] if errors else done.stderr.strip()[-300:]}",
        )


def _group_finished(instance: DagsterInstance, root: str) -> DagsterRunStatus | None:
    runs = instance.get_runs(RunsFilter(tags={"dagster/root_run_id": root}))
    runs = [*runs, *([r] if (r := instance.get_run_by_id(root)) else [])]
    if any(r.status == DagsterRunStatus.SUCCESS for r in runs):
        return DagsterRunStatus.SUCCESS
    return None


def _kill_time(instance: DagsterInstance, run_id: str) -> datetime | None:
    """When the injected SIGKILL happened: the executor reports the crashed step at once."""
    failures = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    if not failures:
        return None
    return datetime.fromtimestamp(min(e.timestamp for e in failures)).astimezone()


def _measure(engine: Engine, instance: DagsterInstance, root: str) -> dict[str, Any]:
    with engine.connect() as conn:
        shipments = conn.execute(
            text("SELECT count(*), count(DISTINCT order_id) FROM carrier.shipments")
        ).one()
        requests = conn.execute(text("SELECT count(*) FROM carrier.requests")).scalar_one()
        tracked = conn.execute(
            text(
                "SELECT count(*) FROM orbit_examples.orders o JOIN carrier.shipments s"
                " ON s.order_id = o.order_id AND s.tracking_number = o.tracking_number"
            )
        ).scalar_one()
        redone = conn.execute(
            text("SELECT count(*) FROM orbit.step_rows WHERE root_run_id = :root AND attempt > 1"),
            {"root": root},
        ).scalar_one()
        recovery = conn.execute(
            text(
                "SELECT min(launched_at) FROM orbit.recoveries WHERE root_run_id = :root"
                " AND parent_run_id = :root"
            ),
            {"root": root},
        ).scalar_one()
    children = instance.get_runs(RunsFilter(tags={"dagster/root_run_id": root}))
    killed_at = _kill_time(instance, root)
    return {
        "shipments_created": int(shipments[0]),
        "duplicate_shipments": int(shipments[0]) - int(shipments[1]),
        "orders_with_carrier_tracking": int(tracked),
        "carrier_requests": int(requests),
        "rows_redone": int(redone),
        "recovery_runs": len(children),
        "kill_to_recovery_launch_s": (recovery - killed_at).total_seconds()
        if recovery is not None and killed_at is not None
        else None,
    }


def run_demo(options: DemoOptions, *, log: Any = print) -> DemoReport:
    """Run the whole demo; every process it starts is stopped before it returns."""
    # Imported here: the pipelines import dagster ops, which only the demo needs.
    from orbit_pipelines.pipelines.sample_data import write_orders_csv

    url = _fresh_database(resolve_url())
    connect_store(url).dispose()
    work = orbit_home() / "demo"
    home = prepare_dagster_home(work / "dagster_home")
    csv_path = write_orders_csv(work / "orders.csv", options.orders)
    token = secrets.token_urlsafe(16)
    env = dagster_env(home, url)
    env["ORBIT_CARRIER_TOKEN"] = token
    log(f"database {mask_url(url)}; logs in {work}")
    with ChildProcesses() as children:
        port_file = work / "carrier.port"
        port_file.unlink(missing_ok=True)
        children.start(
            [
                sys.executable,
                "-m",
                "orbit_pipelines.carrier",
                "--port",
                "0",
                "--port-file",
                str(port_file),
            ],
            env=env,
            log_path=work / "carrier.log",
        )
        wait_for(port_file.exists, timeout_s=60, what="the carrier to listen")
        env["ORBIT_CARRIER_URL"] = f"http://127.0.0.1:{port_file.read_text().strip()}"
        children.start(
            [str(_BIN / "dagster-daemon"), "run", "-w", str(shipped_config("workspace.yaml"))],
            env=env,
            log_path=work / "daemon.log",
        )
        root = str(uuid.uuid4())
        log(
            f"launching {JOB} ({options.orders} orders, {options.shards} shards); "
            f"shard 0 SIGKILLs itself after {options.kill_after_rows} rows"
        )
        _launch(env, csv_path, options, root)
        with dagster_instance(home, url) as instance:
            log("waiting for the kill, the recovery sensor and the recovery run...")
            started = time.monotonic()
            try:
                wait_for(
                    lambda: _group_finished(instance, root),
                    timeout_s=options.timeout_s,
                    interval_s=1.0,
                    what="the run group to succeed",
                )
                final = "SUCCESS"
            except AssertionError:
                final = "TIMED_OUT"
            log(f"run group finished in {time.monotonic() - started:.0f}s")
            engine = create_store_engine(url)
            measured = _measure(engine, instance, root)
            engine.dispose()
    report = DemoReport(
        orders=options.orders,
        run_group=root,
        final_status=final,
        database=mask_url(url),
        ui_command=f"ORBIT_POSTGRES_URL='{_printable(url)}' orbit dev",
        **measured,
    )
    if final != "SUCCESS":
        log(f"error: {E4001_STEP_FAILED.code} the run group did not succeed in time; see {work}")
    return report
