"""Recovery sensor at deployment scale: prints one JSON line per number of failed runs.

    .venv/bin/python bench/sensor_scale.py [--sizes 200,1000,5000] [--check-timeout 300]

For each size, a fresh database (created on ``ORBIT_POSTGRES_URL``'s server, or the local
one, dropped at the end) holds a Dagster instance with 200 STARTED runs whose steps beat
(fresh heartbeats of a live pid on this host) and N FAILURE runs, each failed by a
RUN_FAILURE event. The failed runs take every policy path that needs no code location:
half are switched off by their tag (skip), a quarter belong to groups that used one
attempt already (wait: backoff of an hour), a quarter have a side effect in doubt (hold).

How the runs are made: one run of each kind is created and failed through Dagster's API
(``create_run_for_job``, ``report_run_failed``); the others are SQL copies of its rows in
Dagster's own ``runs``, ``run_tags`` and ``event_logs`` tables with a new run id (written
into the serialized bodies too). Through the API alone, 5,000 runs take most of an hour on
this 2-core machine; the copies are byte for byte what Dagster wrote, so every read the
sensor does is Dagster's real read of real rows. The database commits asynchronously
(``synchronous_commit = off`` on this scratch database only) for the same reason.

Per size:

- ``ticks_to_decide_all``: ``run_cycle`` passes (the sensor's tick) until every failed
  run has a decision (at most 60); ``undecided_after``: FAILURE runs with neither a remembered decision nor a
  recoveries row afterwards (must be 0);
- ``first_tick_s`` / ``first_tick_statements``; ``steady_tick_s`` /
  ``steady_tick_statements``: a pass once everything is decided and the cursor's 5 s
  hold-back has passed (one pass in between reads the held-back events again).
  Statements are counted with SQLAlchemy's ``before_cursor_execute`` event on the Engine
  class, which sees every statement of every engine in this process: Dagster's run and
  event storage (SQLAlchemy + psycopg2) and orbit's (SQLAlchemy + psycopg). The recovery
  path issues no SQL outside SQLAlchemy. BEGIN/COMMIT are not counted.
  pg_stat_statements would need a server setting (shared_preload_libraries) on the shared
  server, which the house rules forbid.
- ``check_interrupted_s``: wall time of ``orbit check-interrupted --json`` in a subprocess
  (null with ``check_interrupted_timeout`` when it did not finish within --check-timeout),
  ``check_interrupted_cpu_s`` its CPU time; ``cli_startup_s`` / ``cli_startup_cpu_s`` the
  same for ``orbit --help`` (interpreter start and imports: on this shared machine at load
  10+, seconds of wall time before the command does anything);
  ``load_avg``: /proc/loadavg when the line was measured.

Before each pass the STARTED runs' heartbeats are refreshed, as their live workers would.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from dagster import DagsterInstance, DagsterRunStatus
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import Engine as EngineClass
from sqlalchemy.engine import make_url

from orbit_pipelines.dagster_io.dagster_home import (
    dagster_env,
    dagster_instance,
    prepare_dagster_home,
)
from orbit_pipelines.recovery.cycle import run_cycle
from orbit_pipelines.recovery.liveness import this_host
from orbit_pipelines.recovery.scan import OVERLAP_S
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.migrations import upgrade
from orbit_pipelines_tests.recovery.many_runs import quiet_job

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
STARTED = 200
SETTINGS = RecoverySettings(backoff_base_s=3600, backoff_jitter=0.0)
MAX_TICKS = 60
PROFILE_STEADY = False


class StatementCounter:
    """Counts SQL statements of every SQLAlchemy engine in this process."""

    def __init__(self) -> None:
        self.count = 0
        event.listen(EngineClass, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        self.count += 1


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh database on the server, dropped afterwards."""
    server = make_url(os.environ.get("ORBIT_POSTGRES_URL") or DEFAULT_SERVER)
    admin = server.set(drivername="postgresql", database="postgres")
    admin_dsn = admin.render_as_string(hide_password=False)
    name = f"orbit_bench_sensor_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _columns(engine: Engine, table: str) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND table_name = :t AND column_name <> 'id'"
                    " ORDER BY ordinal_position"
                ),
                {"t": table},
            ).scalars()
        )


def clone_runs(engine: Engine, template: str, count: int) -> list[str]:
    """``count`` copies of run ``template`` (its runs, run_tags and event_logs rows), each
    with a new run id; returns the ids in the order their events were written."""
    if count <= 0:
        return []
    ids = [str(uuid.uuid4()) for _ in range(count)]
    tables = {name: _columns(engine, name) for name in ("runs", "run_tags", "event_logs")}

    def copy(table: str, body_columns: tuple[str, ...]) -> str:
        select_list = ", ".join(
            "ids.id"
            if col == "run_id"
            else f"replace(t.{col}, :tmpl, ids.id)"
            if col in body_columns
            else f"t.{col}"
            for col in tables[table]
        )
        order = ", t.id" if table == "event_logs" else ""
        # Identifiers only: fixed table names and their columns from information_schema;
        # every value is a bound parameter.
        return (
            f"INSERT INTO {table} ({', '.join(tables[table])})"  # noqa: S608
            f" SELECT {select_list} FROM unnest(CAST(:ids AS text[])) WITH ORDINALITY"
            f" AS ids(id, n) CROSS JOIN {table} t WHERE t.run_id = :tmpl ORDER BY ids.n{order}"
        )

    with engine.begin() as conn:
        params = {"ids": ids, "tmpl": template}
        conn.execute(text(copy("runs", ("run_body",))), params)
        conn.execute(text(copy("run_tags", ())), params)
        conn.execute(text(copy("event_logs", ("event",))), params)
    return ids


def build(instance: DagsterInstance, engine: Engine, failed: int) -> dict[str, list[str]]:
    """The runs of one size; returns run ids by kind."""
    started = instance.create_run_for_job(job_def=quiet_job, status=DagsterRunStatus.STARTED)
    kinds: dict[str, list[str]] = {"started": [started.run_id]}
    kinds["started"] += clone_runs(engine, started.run_id, STARTED - 1)
    off = instance.create_run_for_job(
        job_def=quiet_job, status=DagsterRunStatus.STARTED, tags={"orbit/auto_recover": "false"}
    )
    instance.report_run_failed(off, "worker lost")
    plain = instance.create_run_for_job(job_def=quiet_job, status=DagsterRunStatus.STARTED)
    instance.report_run_failed(plain, "worker lost")
    half = failed // 2
    kinds["skip"] = [off.run_id, *clone_runs(engine, off.run_id, half - 1)]
    others = [plain.run_id, *clone_runs(engine, plain.run_id, failed - half - 1)]
    kinds["wait"] = others[: len(others) // 2]
    kinds["hold"] = others[len(others) // 2 :]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO orbit.heartbeats (run_id, step_key, root_run_id, host, pid,"
                " rows_done, rows_total) SELECT r, 'quiet_op', r, :host, :pid, 5, 10"
                " FROM unnest(CAST(:ids AS text[])) AS r"
            ),
            {"ids": kinds["started"], "host": this_host(), "pid": os.getpid()},
        )
        conn.execute(
            text(
                "INSERT INTO orbit.recoveries (parent_run_id, root_run_id, job_name, attempt,"
                " reason, decided_by, status) SELECT 'earlier-' || r, r, 'quiet_job', 1,"
                " 'failed', 'bench', 'failed' FROM unnest(CAST(:ids AS text[])) AS r"
            ),
            {"ids": kinds["wait"]},
        )
        conn.execute(
            text(
                "INSERT INTO orbit.effect_scopes (root_run_id, step_key)"
                " SELECT r, 'quiet_op' FROM unnest(CAST(:ids AS text[])) AS r"
            ),
            {"ids": kinds["hold"]},
        )
        conn.execute(
            text(
                "INSERT INTO orbit.effects (key_hash, scope_id, status, detail)"
                " SELECT orbit.effect_digest('pay-' || s.root_run_id), s.scope_id, 2,"
                " jsonb_build_object('key', 'pay-' || s.root_run_id, 'receiver', 'unsafe')"
                " FROM orbit.effect_scopes s WHERE s.root_run_id = ANY(CAST(:ids AS text[]))"
            ),
            {"ids": kinds["hold"]},
        )
    return kinds


def beat(engine: Engine) -> None:
    """The STARTED runs' workers are alive: their beats are fresh."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE orbit.heartbeats SET beat_at = now()"))


def tick(
    instance: DagsterInstance, engine: Engine, counter: StatementCounter
) -> tuple[int, float, int]:
    """One sensor pass: (runs decided, seconds, statements)."""
    beat(engine)
    before = counter.count
    started = time.perf_counter()
    outcomes = run_cycle(instance, engine, SETTINGS, decided_by="bench", scanner="bench")
    seconds = time.perf_counter() - started
    decided = sum(1 for o in outcomes if o.action not in ("finished", "error"))
    return decided, seconds, counter.count - before


def undecided(engine: Engine, failed_ids: list[str]) -> int:
    """Failed runs with neither a remembered decision nor a recoveries row."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM unnest(CAST(:ids AS text[])) AS r WHERE NOT EXISTS"
                    " (SELECT 1 FROM orbit.recovery_decisions d WHERE d.parent_run_id = r)"
                    " AND NOT EXISTS (SELECT 1 FROM orbit.recoveries c WHERE c.parent_run_id = r)"
                ),
                {"ids": failed_ids},
            ).scalar_one()
        )


def check_interrupted(home: Path, url: str, timeout_s: float) -> dict[str, Any]:
    """`orbit check-interrupted --json` in a subprocess: wall seconds (None past the
    timeout), the child's CPU seconds (user + sys: what the machine's load does not
    inflate), and for comparison the wall and CPU seconds of `orbit --help` (the same
    interpreter start and imports, no work)."""
    env = {**os.environ, **dagster_env(home, url, base={}), "DAGSTER_HOME": str(home)}

    def timed(args: list[str]) -> tuple[float | None, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        try:
            subprocess.run(
                [sys.executable, "-m", "orbit_pipelines.cli", *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout_s,
                check=False,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            return None, 0.0
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return round(wall, 2), round(cpu, 2)

    wall, cpu = timed(["check-interrupted", "--json"])
    start_wall, start_cpu = timed(["--help"])
    return {
        "check_interrupted_s": wall,
        "check_interrupted_cpu_s": cpu,
        "cli_startup_s": start_wall,
        "cli_startup_cpu_s": start_cpu,
    }


def measure(failed: int, check_timeout_s: float, counter: StatementCounter) -> dict[str, Any]:
    """The JSON line of one size."""
    with scratch_database() as url, tempfile.TemporaryDirectory() as tmp:
        engine = create_store_engine(url, pooled=True)
        upgrade(engine)
        home = prepare_dagster_home(Path(tmp) / "dagster_home")
        with dagster_instance(home, url) as instance:
            build_started = time.perf_counter()
            kinds = build(instance, engine, failed)
            build_s = time.perf_counter() - build_started
            failed_ids = kinds["skip"] + kinds["wait"] + kinds["hold"]
            first = tick(instance, engine, counter)
            ticks, total = 1, first[0]
            while ticks < MAX_TICKS and undecided(engine, failed_ids) > 0:
                decided, _s, _n = tick(instance, engine, counter)
                ticks, total = ticks + 1, total + decided
            # Steady: nothing changed since the last pass, and the newest failures are
            # older than the cursor's hold-back (scan.OVERLAP_S), as they are a few
            # seconds after a burst.
            time.sleep(OVERLAP_S)
            tick(instance, engine, counter)
            profiler = cProfile.Profile() if PROFILE_STEADY else None
            if profiler:
                profiler.enable()
            steady = tick(instance, engine, counter)
            if profiler:
                profiler.disable()
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(
                    "orbit_pipelines|dagster/_core/instance|sqlalchemy/engine/base", 40
                )
            line = {
                "bench": "sensor_scale",
                "started_runs": len(kinds["started"]),
                "failed_runs": len(failed_ids),
                "ticks_to_decide_all": ticks,
                "decisions": total,
                "undecided_after": undecided(engine, failed_ids),
                "first_tick_s": round(first[1], 3),
                "first_tick_statements": first[2],
                "steady_tick_s": round(steady[1], 3),
                "steady_tick_statements": steady[2],
                "steady_tick_decided": steady[0],
                "build_s": round(build_s, 1),
            }
            timing = check_interrupted(home, url, check_timeout_s)
            line.update(timing)
            if timing["check_interrupted_s"] is None:
                line["check_interrupted_timeout"] = check_timeout_s
            line["load_avg"] = Path("/proc/loadavg").read_text().split()[:3]
        engine.dispose()
    return line


def main() -> None:
    """Parse arguments, print one JSON line per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,1000,5000")
    parser.add_argument("--check-timeout", type=float, default=300.0)
    parser.add_argument("--profile-steady", action="store_true", help="cProfile on stderr")
    args = parser.parse_args()
    global PROFILE_STEADY
    PROFILE_STEADY = args.profile_steady
    counter = StatementCounter()
    for size in (int(s) for s in args.sizes.split(",")):
        print(json.dumps(measure(size, args.check_timeout, counter)), flush=True)


if __name__ == "__main__":
    main()
