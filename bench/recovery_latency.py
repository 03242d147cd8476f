"""Recovery latency at default settings: SIGKILL of a run worker -> recovery launch -> success.

One real ``dagster-daemon`` (queue, sensors, run monitoring) on a fresh database and Dagster
home, serving the recovery e2e code location (``orbit_pipelines_tests.sensors.e2e_location``)
whose ``orbit_recovery`` sensor is built with no settings, so it runs at the defaults of
``RecoverySettings`` unless ``--setting`` overrides one (the ``ORBIT_RECOVERY_*`` variables
of every Dagster process are removed first).

Each kill is one new run group: ``rows_job`` is launched through the queue with 6 rows of
which the first attempt does 3 and then stops moving while its heartbeat thread keeps
beating (a live, healthy-looking worker). After a random pause, uniform over one sensor
interval, so kills land at every phase of the sensor's tick, the worker is SIGKILLed
(the dead pid is what the sensor finds). Measured from the kill:

- ``kill_to_launch_s``: until the recovery run exists (created by the sensor, queued);
- ``kill_to_started_s``: until that run is STARTED (the queue dequeued it, a worker runs);
- ``kill_to_success_s``: until the group has a SUCCESS run (the last 3 rows done).

Per kill also ``kill_to_detected_s`` (the sensor's tick claimed the recovery:
``orbit.recoveries.detected_at``, Postgres' clock on this host) and ``detected_to_launched_s``
(that tick's work until the re-execution was submitted: ``launched_at``), which split the
launch latency into waiting for a tick and the tick's own work.

What the interval costs a deployment, measured after the kills with nothing running for
``--idle-s`` seconds (60): ``idle_cpu_s_per_min``, CPU seconds per minute of the daemon's
whole process tree (daemon, code server: where the sensor's tick runs), and
``idle_db_xacts_per_min`` / ``idle_db_rows_written_per_min`` of the deployment's
database (``pg_stat_database``: Dagster's storage and orbit's, the tick records included).

    python bench/recovery_latency.py [--kills 20] [--setting interval_s=5 ...]

Prints one JSON line per kill on stderr and one summary JSON line on stdout (p50 / p95 /
max of each, the settings in force, the load average before and after). Needs the Postgres
of ``ORBIT_TEST_POSTGRES_URL`` or 127.0.0.1:5432; every process runs in its own process
group and is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dagster import DagsterRunStatus, RunsFilter
from sqlalchemy import text

from orbit_pipelines.dagster_io.dagster_home import dagster_env, prepare_dagster_home
from orbit_pipelines.processes import ChildProcesses
from orbit_pipelines.recovery.settings import ENV_PREFIX, RecoverySettings
from orbit_pipelines.store.engine import connect_store
from orbit_pipelines.store.recoveries import get_recovery
from orbit_pipelines_tests.postgres import LOCAL_URL, TEST_URL_ENV, create_database, drop_database
from orbit_pipelines_tests.sensors.harness import Harness

ROWS = 6
ROWS_BEFORE_HANG = 3
# Generous: a loaded machine (load 20+) can take a minute to start a run worker.
WAIT_S = 300.0


def _wait(predicate: Any, timeout_s: float, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return None


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def summarize(values: list[float]) -> dict[str, float | None]:
    """p50 / p95 / max, rounded to 0.1 s."""

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 1)

    return {
        "p50": r(statistics.median(values) if values else None),
        "p95": r(percentile(values, 0.95)),
        "max": r(max(values) if values else None),
    }


def one_kill(harness: Harness, pause_s: float) -> dict[str, Any]:
    """Launch a group, let its worker hang alive, SIGKILL it, time the recovery."""
    run_id = harness.launch(
        "rows_job", {"rows": ROWS, "row_sleep_s": 0.05, "hang_after": ROWS_BEFORE_HANG}
    )
    _host, pid = harness.wait_rows(run_id, ROWS_BEFORE_HANG, timeout_s=WAIT_S)
    time.sleep(pause_s)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    killed_wall = time.time()
    instance = harness.instance

    def group_runs() -> list[Any]:
        return list(instance.get_runs(RunsFilter(tags={"dagster/root_run_id": run_id})))

    child = _wait(lambda: harness.children_of(run_id), WAIT_S)
    launch_s = time.monotonic() - killed if child else None
    started_s = None
    if child:
        running = (
            DagsterRunStatus.STARTED,
            DagsterRunStatus.SUCCESS,
            DagsterRunStatus.FAILURE,
        )
        child_id = child[0].run_id

        def child_started() -> bool:
            run = instance.get_run_by_id(child_id)
            return run is not None and run.status in running

        if _wait(child_started, WAIT_S):
            started_s = time.monotonic() - killed
    detected_s = launched_s = None
    with harness.engine.connect() as conn:
        recovery = get_recovery(conn, run_id)
    if recovery is not None:
        detected_s = recovery.detected_at.timestamp() - killed_wall
        if recovery.launched_at is not None:
            launched_s = (recovery.launched_at - recovery.detected_at).total_seconds()
    succeeded = _wait(
        lambda: any(r.status == DagsterRunStatus.SUCCESS for r in group_runs()), WAIT_S, 0.2
    )
    success_s = time.monotonic() - killed if succeeded else None
    return {
        "run_id": run_id,
        "pause_s": round(pause_s, 2),
        "kill_to_launch_s": None if launch_s is None else round(launch_s, 2),
        "kill_to_started_s": None if started_s is None else round(started_s, 2),
        "kill_to_detected_s": None if detected_s is None else round(detected_s, 2),
        "detected_to_launched_s": None if launched_s is None else round(launched_s, 2),
        "kill_to_success_s": None if success_s is None else round(success_s, 2),
        "runs_in_group": 1 + len(group_runs()),  # the killed run has no root tag
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _stats() -> dict[int, list[str]]:
    """/proc/<pid>/stat of every process, split after the command name."""
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The fields follow the parenthesised command name, which may contain spaces.
        found[int(entry.name)] = stat.rsplit(")", 1)[-1].split()
    return found


def tree_cpu_s(root_pid: int) -> dict[int, float]:
    """User + system CPU seconds of ``root_pid`` and each live descendant, by pid."""
    stats = _stats()
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)  # ppid
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        if pid in stats:
            found[pid] = (int(stats[pid][11]) + int(stats[pid][12])) / ticks  # utime, stime
    return found


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two ``tree_cpu_s`` readings by the processes alive at the
    second (a process that ended meanwhile takes its time with it: a floor, not a guess)."""
    return sum(spent - before.get(pid, 0.0) for pid, spent in after.items())


def db_activity(harness: Harness) -> tuple[int, int]:
    """(transactions, rows written) of the deployment's database so far."""
    with harness.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted"
                " FROM pg_stat_database WHERE datname = current_database()"
            )
        ).one()
    return int(row[0]), int(row[1])


def idle_cost(harness: Harness, seconds: float) -> dict[str, float]:
    """What the idle deployment (no run) costs per minute: CPU of the daemon's tree, DB."""
    assert harness.daemon is not None
    # Settle first (without kills the code server may still be loading), and stats reach
    # pg_stat_database within a second or so.
    time.sleep(20)
    cpu0, (x0, w0) = tree_cpu_s(harness.daemon.pid), db_activity(harness)
    time.sleep(seconds)
    cpu1, (x1, w1) = tree_cpu_s(harness.daemon.pid), db_activity(harness)
    per_min = 60.0 / seconds
    return {
        "idle_s": seconds,
        # The reads above are themselves one transaction each side: not the deployment's.
        "idle_cpu_s_per_min": round(cpu_between(cpu0, cpu1) * per_min, 2),
        "idle_processes_ended": len(set(cpu0) - set(cpu1)),
        "idle_db_xacts_per_min": round((x1 - x0 - 1) * per_min, 1),
        "idle_db_rows_written_per_min": round((w1 - w0) * per_min, 1),
    }


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """``interval_s=5`` -> ``{"ORBIT_RECOVERY_INTERVAL_S": "5"}`` (validated)."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        env[ENV_PREFIX + name.strip().upper()] = value.strip()
    RecoverySettings.from_env(env)  # a typo or a bad value fails here, not in the daemon
    return env


def run(kills: int, settings_env: dict[str, str], seed: int, idle_s: float) -> dict[str, Any]:
    """Start the deployment, do the kills, stop everything; the summary."""
    admin = os.environ.get(TEST_URL_ENV) or LOCAL_URL
    db_url = create_database(admin, prefix="orbit_latency")
    children = ChildProcesses()
    scratch = Path(tempfile.mkdtemp(prefix="recovery_latency_"))
    saved = dict(os.environ)
    settings = RecoverySettings.from_env(settings_env)
    rng = random.Random(seed)
    load_before = os.getloadavg()
    per_kill: list[dict[str, Any]] = []
    idle: dict[str, float] = {}
    started = time.monotonic()
    try:
        engine = connect_store(db_url, pooled=True)
        home = prepare_dagster_home(scratch / "dagster_home")
        os.environ.update(dagster_env(home, db_url, base={}))
        harness = Harness(
            home=home,
            db_url=db_url,
            engine=engine,
            children=children,
            tmp=scratch,
            settings_env=dict(settings_env),
        )
        harness.start_daemon()
        for _ in range(kills):
            # Uniform over one sensor interval: the kill's phase against the tick is random.
            outcome = one_kill(harness, rng.uniform(0, settings.interval_s))
            per_kill.append(outcome)
            print(json.dumps(outcome), file=sys.stderr, flush=True)
        if idle_s > 0:
            idle = idle_cost(harness, idle_s)
        engine.dispose()
    finally:
        children.stop_all()
        os.environ.clear()
        os.environ.update(saved)
        drop_database(admin, db_url)

    def column(name: str) -> list[float]:
        return [k[name] for k in per_kill if k[name] is not None]

    return {
        "kills": kills,
        "recovered": sum(1 for k in per_kill if k["kill_to_success_s"] is not None),
        "kill_to_launch_s": summarize(column("kill_to_launch_s")),
        "kill_to_started_s": summarize(column("kill_to_started_s")),
        "kill_to_detected_s": summarize(column("kill_to_detected_s")),
        "detected_to_launched_s": summarize(column("detected_to_launched_s")),
        "kill_to_success_s": summarize(column("kill_to_success_s")),
        "settings": {
            "interval_s": settings.interval_s,
            "heartbeat_timeout_s": settings.heartbeat_timeout_s,
            "overridden": sorted(settings_env),
        },
        **idle,
        "wall_s": round(time.monotonic() - started, 1),
        "cpus": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, print the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one RecoverySettings field (default: none, the shipped defaults)",
    )
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--idle-s", type=float, default=60.0, help="idle cost measurement (0: skip it)"
    )
    args = parser.parse_args(argv)
    summary = run(args.kills, parse_settings(args.setting), args.seed, args.idle_s)
    print(json.dumps(summary), flush=True)
    return 0 if summary["recovered"] == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
