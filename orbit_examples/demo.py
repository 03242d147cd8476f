"""`orbit demo`'s scenario: ship a few hundred orders, kill a worker partway, watch the sensor
recover, and check at the receiver that every order shipped exactly once.

This is the part a user writes for a demo (or an acceptance test) of their own pipeline,
built on the public API only: the job and its run config (the ``shipments`` example with its
fault injection armed), its tables and input, the service it calls (the local carrier) and
what "right" means, measured in the carrier's own tables rather than taken from what the job
says about itself. The deployment around it (a fresh database, DAGSTER_HOME, the daemon, the
launch, orbit's record of the recovery) is the ``orbit demo`` command's
(``orbit_pipelines/cli/demo_runner.py``), which is handed this module.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from orbit_examples.carrier.resource import CARRIER_TOKEN_ENV, CARRIER_URL_ENV
from orbit_pipelines import OrbitError, OrbitStore
from orbit_pipelines.errors import E2008_BAD_CONFIG

DEMO_DATABASE = "orbit_demo"
# Tests (and anyone running two demos side by side) pick another name with this variable.
DEMO_DATABASE_ENV = "ORBIT_DEMO_DATABASE"
# The demo drops and recreates its database: only names with this prefix may be used, so a
# typo can never drop somebody's real database.
_DATABASE_NAME = re.compile(r"orbit_demo[a-z0-9_]{0,53}")
# The recovery sensor's interval setting (orbit's documented ORBIT_RECOVERY_* variables).
INTERVAL_ENV = "ORBIT_RECOVERY_INTERVAL_S"
DEMO_SENSOR_INTERVAL_S = 5
JOB = "shipments"
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


def drop_demo_database(server_url: str, database: str) -> None:
    """Drop a demo database (tests clean up with this)."""
    admin = make_url(server_url).set(drivername="postgresql")
    if admin.database == database:
        admin = admin.set(database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{demo_database_name(database)}" WITH (FORCE)')


@dataclass(frozen=True)
class Service:
    """A process the scenario's runs call: started before the job is launched, stopped after.

    ``ready()`` returns None while it starts, then the environment the runs need to reach it.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    ready: Callable[[], dict[str, str] | None]


def describe_launch(options: DemoOptions) -> str:
    """The line said when the job is launched."""
    return (
        f"launching {JOB} ({options.orders} orders, {options.shards} shards); "
        f"shard 0 SIGKILLs itself after {options.kill_after_rows} rows"
    )


def prepare(url: str, work: Path, options: DemoOptions) -> dict[str, Any]:
    """Create the example's and the carrier's tables and write the orders CSV; returns the
    run config of the ``shipments`` job with its fault injection armed."""
    # Imported here: the pipelines import dagster ops, which only the demo needs.
    from orbit_examples.carrier.storage import create_tables as create_carrier_tables
    from orbit_examples.pipelines.example_tables import ensure_tables
    from orbit_examples.pipelines.sample_data import write_orders_csv

    store = OrbitStore(postgres_url=url)
    engine = store.engine
    try:
        ensure_tables(engine)
        create_carrier_tables(engine)
    finally:
        engine.dispose()
    csv_path = write_orders_csv(work / "orders.csv", options.orders)
    return {
        "ops": {
            "load_orders": {"config": {"csv_path": str(csv_path)}},
            "shard_orders": {"config": {"shards": options.shards}},
            "ship_shard": {"config": {"kill_after_rows": options.kill_after_rows, "kill_shard": 0}},
        }
    }


def services(work: Path) -> list[Service]:
    """The local carrier on a free port, with a token of this demo's own."""
    token = secrets.token_urlsafe(16)
    port_file = work / "carrier.port"
    port_file.unlink(missing_ok=True)

    def ready() -> dict[str, str] | None:
        if not port_file.exists():
            return None
        url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        return {CARRIER_URL_ENV: url, CARRIER_TOKEN_ENV: token}

    argv = [sys.executable, "-m", "orbit_examples.carrier", "--port", "0"]
    return [
        Service(
            name="the carrier",
            argv=[*argv, "--port-file", str(port_file)],
            env={CARRIER_TOKEN_ENV: token},
            log=work / "carrier.log",
            ready=ready,
        )
    ]


# Orders whose tracking number is not one the carrier assigned to that very order.
_MISMATCHED_ORDERS = """
SELECT o.order_id FROM orbit_examples.orders o
WHERE o.tracking_number IS NULL
   OR NOT EXISTS (
        SELECT 1 FROM carrier.shipments s
        WHERE s.order_id = o.order_id AND s.tracking_number = o.tracking_number)
ORDER BY o.order_id
"""


def measure(url: str, options: DemoOptions) -> dict[str, Any]:
    """What the receiver saw: shipments, repeated requests, orders carrying their tracking."""
    engine = OrbitStore(postgres_url=url).engine
    try:
        with engine.connect() as conn:
            shipments = conn.execute(
                text("SELECT count(*), count(DISTINCT order_id) FROM carrier.shipments")
            ).one()
            requests = conn.execute(
                text("SELECT count(*), count(DISTINCT idempotency_key) FROM carrier.requests")
            ).one()
            in_table = conn.execute(text("SELECT count(*) FROM orbit_examples.orders")).scalar_one()
            mismatched = list(conn.execute(text(_MISMATCHED_ORDERS)).scalars())
    finally:
        engine.dispose()
    tracked = int(in_table) - len(mismatched)
    return {
        "shipments_created": int(shipments[0]),
        "duplicate_shipments": int(shipments[0]) - int(shipments[1]),
        "orders_tracked": tracked,
        # Orders that never reached the orders table count as not tracked, too.
        "tracking_mismatches": options.orders - tracked,
        "mismatch_sample": mismatched[:_MISMATCH_SAMPLE],
        "carrier_requests": int(requests[0]),
        "carrier_repeat_requests": int(requests[0]) - int(requests[1]),
    }
