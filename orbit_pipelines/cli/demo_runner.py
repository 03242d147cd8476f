"""`orbit demo`'s deployment: a fresh database, DAGSTER_HOME, ``dagster-daemon`` on the shipped
code location, the job launched through Dagster's queue, the wait for its run group, and what
orbit's own ledger says about the recovery.

The scenario (which job, its tables and input, the services it calls, what "right" means at
the receiver, the report) is an example built on the public API: ``orbit_examples.demo``,
handed in by ``cli/demo.py``, the one place the product imports the examples (lazily). This
module never imports it.

Everything is real: a fresh demo database (``orbit_demo`` unless told otherwise) on the
configured (or embedded) Postgres, the scenario's services and ``dagster-daemon`` as child
processes, the job launched with its fault injection armed, and the recovery sensor doing
its work. The only setting the demo may change is the sensor interval (the scenario's
``DEMO_SENSOR_INTERVAL_S`` unless ``ORBIT_RECOVERY_INTERVAL_S`` is set; 5 s, the default,
for the examples' scenario).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, cast

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

INTERVAL_ENV = ENV_PREFIX + "INTERVAL_S"
UI_PORT = 3000
_BIN = Path(sys.executable).parent


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


def _sensor_interval(requested: int | None, default: int) -> int:
    if requested is not None:
        return requested
    configured = os.environ.get(INTERVAL_ENV)
    return int(configured) if configured else default


def _launch(
    children: ChildProcesses,
    env: dict[str, str],
    job: str,
    run_config: dict[str, Any],
    run_id: str,
    log_path: Path,
) -> None:
    """``dagster job launch`` (to the daemon's queue), as a child we can always reap: it
    starts its own code server, which must not outlive a Ctrl-C."""
    argv = [str(_BIN / "dagster"), "job", "launch", "-w", str(shipped_config("workspace.yaml"))]
    argv += ["-j", job, "--run-id", run_id, "--config-json", json.dumps(run_config)]
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
        raise OrbitError(E2008_BAD_CONFIG, f"could not launch {job}: {detail}")


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
# effect is recorded by another run than the one that committed the row (or was attempted
# more than once), or the row itself took more than one attempt.
_ROWS_REDONE = """
SELECT count(*) FROM orbit.row_outcomes r
WHERE r.root_run_id = :root
  AND (r.attempt > 1 OR EXISTS (
        SELECT 1 FROM orbit.effects e
        JOIN orbit.effect_scopes s ON s.scope_id = e.scope_id
        WHERE s.root_run_id = r.root_run_id AND s.step_key = r.step_key
          AND e.row_tag = orbit.effect_row_tag(uuid_send(r.key_hash))
          AND (coalesce((e.detail ->> 'attempts')::integer, 1) > 1
               OR nullif(s.run_id, '') IS DISTINCT FROM r.run_id)))
"""


def _measure(engine: Engine, instance: DagsterInstance, root: str) -> dict[str, Any]:
    """What orbit's ledger and Dagster say about the run group's recovery."""
    with engine.connect() as conn:
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
    return {
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


def run_demo(scenario: ModuleType, options: Any, *, log: Callable[[str], object] = print) -> Any:
    """Run the whole demo of ``scenario`` (``orbit_examples.demo``) with its ``options``;
    every process it starts is stopped before it returns (also on an error, Ctrl-C or
    SIGTERM). Returns the scenario's report."""
    began = time.monotonic()
    database = scenario.demo_database_name(options.database)
    interval = _sensor_interval(options.sensor_interval_s, scenario.DEMO_SENSOR_INTERVAL_S)
    url = _fresh_database(resolve_url(), database)
    connect_store(url).dispose()  # orbit's migrations
    work = orbit_home() / "demo" / database
    work.mkdir(parents=True, exist_ok=True)
    # Every table the report reads exists from the start, so a demo that fails early
    # still reports (zeros) instead of tripping over a missing table.
    run_config = scenario.prepare(url, work, options)
    # The same DAGSTER_HOME as `orbit dev`, so the UI it prints finds the step logs too.
    home = prepare_dagster_home(orbit_home() / "dagster_home")
    with dagster_instance(home, url):
        pass  # Dagster creates its tables now, not in two racing processes below
    env = dagster_env(home, url)
    env[INTERVAL_ENV] = str(interval)
    log(f"database {mask_url(url)}; logs in {work}")
    with _sigterm_as_interrupt(), ChildProcesses() as children:
        names: dict[int, str] = {}
        for service in scenario.services(work):
            proc = children.start(service.argv, env={**env, **service.env}, log_path=service.log)
            names[proc.pid] = service.name

            def ready(service: Any = service) -> dict[str, str] | None:
                _alive(children, names, work)
                return service.ready()

            started_env = wait_for(ready, timeout_s=60, what=f"{service.name} to be ready")
            env.update(cast(dict[str, str], started_env))
        daemon = children.start(
            [str(_BIN / "dagster-daemon"), "run", "-w", str(shipped_config("workspace.yaml"))],
            env=env,
            log_path=work / "daemon.log",
        )
        names[daemon.pid] = "dagster-daemon"
        root = str(uuid.uuid4())
        log(scenario.describe_launch(options))
        _launch(children, env, scenario.JOB, run_config, root, work / "launch.log")
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
                measured = _measure(engine, instance, root)
        finally:
            engine.dispose()
        measured.update(scenario.measure(url, options))
        log(f"stopping {' and '.join(names.values())} (with its code server and run workers)")
    shown = measured["recovery_run_ids"][-1] if measured["recovery_run_ids"] else root
    return scenario.DemoReport(
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
