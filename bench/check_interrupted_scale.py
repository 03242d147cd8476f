"""How long `orbit check-interrupted --json` takes, and how many SQL statements it sends,
with N interrupted run groups (each a real failed Dagster run, held for a person).

    python bench/check_interrupted_scale.py --groups 1000 [--real 20]

Prints one JSON line. Uses ORBIT_TEST_POSTGRES_URL or the local Postgres; creates and
drops its own database.

``--real`` groups are real failed runs (``execute_job``); the rest are SQL copies of the
first one's rows in Dagster's ``runs``, ``run_tags`` and ``event_logs`` tables with a new
run id (``sensor_scale.clone_runs``: byte for byte what Dagster wrote), because 1,000 real
runs take a quarter of an hour to create on this machine under load. ``--real`` equal to
``--groups`` makes every group real.

Measured 2026-12-01 on the shared 2-core machine, 200 groups: 6f8b081 97.4 s and 35.1
statements per group; after batching (prefetched groups, shared snapshots and step stats,
one failure-cause read, pooled store engine) 8.5 s and 12.2 per group. With every
per-group read set-based (3361b88): 200 groups 0.57 s and 33 statements in all (load 8.1;
a9089d5: 8.4 s, 2,431), 1,000 groups 0.99-1.91 s, 0.42-0.45 CPU seconds and 34 statements
(load 6.0-6.5; a9089d5: 39.5 s, 7.25 CPU seconds, 12,063).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dagster import DagsterInstance, execute_job, reconstructable
from sensor_scale import clone_runs
from sqlalchemy import Engine, event

from orbit_pipelines.cli import main as orbit_main
from orbit_pipelines.dagster_io.dagster_home import dagster_env, prepare_dagster_home
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.migrations import upgrade
from orbit_pipelines_tests.cli.jobs import bad_input_job
from orbit_pipelines_tests.postgres import LOCAL_URL, TEST_URL_ENV, create_database, drop_database


def main() -> int:
    """Create the groups, time the command, print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--real", type=int, default=20, help="groups made by execute_job")
    parser.add_argument("--profile", action="store_true", help="cProfile top 40 on stderr")
    parser.add_argument(
        "--profile-filter", default="orbit_pipelines|dagster/_core/instance", help="regex"
    )
    args = parser.parse_args()
    admin = os.environ.get(TEST_URL_ENV) or LOCAL_URL
    url = create_database(admin, prefix="orbit_bench")
    try:
        engine = create_store_engine(url)
        upgrade(engine)
        engine.dispose()
        with tempfile.TemporaryDirectory() as tmp:
            home = prepare_dagster_home(Path(tmp) / "dagster_home")
            os.environ.update(dagster_env(home, url, base={}))
            started = time.perf_counter()
            real = max(1, min(args.real, args.groups))
            with DagsterInstance.get() as instance:
                first = None
                for _ in range(real):
                    with execute_job(reconstructable(bad_input_job), instance=instance) as ran:
                        first = first or ran.run_id
            if args.groups > real and first is not None:
                engine = create_store_engine(url)
                clone_runs(engine, first, args.groups - real)
                engine.dispose()
            setup_s = time.perf_counter() - started

            statements = 0

            def count(*_args: object) -> None:
                nonlocal statements
                statements += 1

            event.listen(Engine, "before_cursor_execute", count)
            out = io.StringIO()
            started = time.perf_counter()
            cpu_started = time.process_time()
            profiler = cProfile.Profile() if args.profile else None
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                if profiler:
                    profiler.enable()
                code = orbit_main(["check-interrupted", "--json"])
                if profiler:
                    profiler.disable()
            if profiler:
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(
                    args.profile_filter, 40
                )
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            event.remove(Engine, "before_cursor_execute", count)
            listed = len(json.loads(out.getvalue())["interrupted"])
    finally:
        drop_database(admin, url)
    print(
        json.dumps(
            {
                "bench": "check_interrupted_scale",
                "groups": args.groups,
                "real_runs": real,
                "load_avg": Path("/proc/loadavg").read_text().split()[:3],
                "listed": listed,
                "exit_code": code,
                "seconds": round(elapsed, 2),
                # This process only (not Postgres): what the machine's load does not inflate.
                "cpu_seconds": round(cpu, 2),
                "sql_statements": statements,
                "statements_per_group": round(statements / max(1, args.groups), 1),
                "setup_seconds": round(setup_s, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
