"""Bench plumbing: throwaway databases, worker processes, and counting what the work did.

Nothing here knows about a particular system; ``_systems`` drives orbit, Dagster and DBOS
through these helpers.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from _row_work import (
    DB_URL_ENV,
    INVOCATIONS_ENV,
    KILL_AT_ENV,
    KILL_MARKER_ENV,
    KILL_POINT_ENV,
    RECEIVER_DDL,
    ROWS_ENV,
    SCENARIO_ENV,
    libpq_url,
)
from psycopg import sql
from sqlalchemy.engine import make_url

from orbit_pipelines.processes import ChildProcesses
from orbit_pipelines.store.urls import mask_url

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# A worker that has not finished by then is reported as a failure, not waited on forever.
CHILD_TIMEOUT_S = 900.0


def admin_url() -> str:
    """The server to create bench databases on: ``ORBIT_POSTGRES_URL`` or the local one."""
    return os.environ.get("ORBIT_POSTGRES_URL") or DEFAULT_ADMIN_URL


def with_database(url: str, database: str) -> str:
    """The same server, another database."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@contextmanager
def fresh_databases(server_url: str, *suffixes: str) -> Iterator[dict[str, str]]:
    """Create one database per suffix (``orbit_bench_<id>_<suffix>``); drop them all after."""
    run_id = uuid.uuid4().hex[:10]
    urls: dict[str, str] = {}
    try:
        with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
            for suffix in suffixes:
                name = f"orbit_bench_{run_id}_{suffix}"
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                urls[suffix] = with_database(server_url, name)
        yield urls
    finally:
        with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
            for url in urls.values():
                name = str(make_url(url).database)
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def create_receiver(db_url: str) -> None:
    """The effect receiver: ``bench.receiver``, deliberately without a unique constraint."""
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute(RECEIVER_DDL)


@dataclass
class Scenario:
    """One system, one mode (clean or crash): its files and the environment of its workers."""

    name: str
    rows: int
    db_url: str
    workdir: Path
    kill_at: int | None = None
    kill_point: str = "after-effect"
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def invocations_file(self) -> Path:
        """Where every handler call is logged."""
        return self.workdir / f"{self.name}.invocations"

    @property
    def kill_marker(self) -> Path:
        """Exists once the first attempt has killed itself."""
        return self.workdir / f"{self.name}.killed"

    def env(self, *, may_kill: bool) -> dict[str, str]:
        """Environment for a worker; recovery workers get no kill instruction at all."""
        env = dict(os.environ)
        env.update(self.extra_env)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p
        )
        env[DB_URL_ENV] = self.db_url
        env[SCENARIO_ENV] = self.name
        env[ROWS_ENV] = str(self.rows)
        env[INVOCATIONS_ENV] = str(self.invocations_file)
        env.pop(KILL_AT_ENV, None)
        if may_kill and self.kill_at is not None:
            env[KILL_AT_ENV] = str(self.kill_at)
            env[KILL_POINT_ENV] = self.kill_point
            env[KILL_MARKER_ENV] = str(self.kill_marker)
        return env


@dataclass
class ChildOutcome:
    """How one worker process ended, how long it took, and the JSON it printed last."""

    returncode: int
    wall_s: float
    report: dict[str, object]
    log_path: Path


def run_worker(
    children: ChildProcesses,
    script: str,
    args: list[str],
    env: dict[str, str],
    log_path: Path,
) -> ChildOutcome:
    """Run ``python bench/<script> args`` in its own process group and wait for it."""
    started = time.perf_counter()
    proc = children.start(
        [sys.executable, str(BENCH_DIR / script), *args],
        env=env,
        cwd=BENCH_DIR.parent,
        log_path=log_path,
    )
    try:
        returncode = proc.wait(timeout=CHILD_TIMEOUT_S)
    finally:
        children.stop(proc)
    wall = time.perf_counter() - started
    return ChildOutcome(returncode, wall, _last_json_line(log_path), log_path)


def _last_json_line(log_path: Path) -> dict[str, object]:
    if not log_path.exists():
        return {}
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                return parsed
    return {}


class WorkerFailed(RuntimeError):
    """A worker did not end the way its scenario requires."""

    def __init__(self, what: str, outcome: ChildOutcome) -> None:
        tail = outcome.log_path.read_text(errors="replace")[-3000:] if outcome.log_path else ""
        super().__init__(
            f"{what}: exit code {outcome.returncode}; log {outcome.log_path}:\n{mask_url(tail)}"
        )


@dataclass
class Tally:
    """What the receiver and the invocation log saw for one scenario."""

    invocations: int
    distinct_rows_invoked: int
    effects: int
    distinct_effects: int

    def rows_redone(self, rows: int) -> int:
        """Handler calls beyond one per row."""
        return self.invocations - rows

    @property
    def duplicate_effects(self) -> int:
        """Deliveries beyond the first, over all effect keys."""
        return self.effects - self.distinct_effects


def tally(scenario: Scenario) -> Tally:
    """Count handler calls (from the log) and effect deliveries (at the receiver)."""
    keys: list[str] = []
    if scenario.invocations_file.exists():
        keys = [
            line.split(" ", 1)[0]
            for line in scenario.invocations_file.read_text().splitlines()
            if line
        ]
    with psycopg.connect(libpq_url(scenario.db_url)) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT effect_key) FROM bench.receiver WHERE scenario = %s",
            (scenario.name,),
        ).fetchone()
    assert row is not None
    return Tally(len(keys), len(set(keys)), int(row[0]), int(row[1]))
