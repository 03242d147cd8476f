"""The work every benchmarked system does per row: count the call, send one effect, maybe die.

The three systems run the same handler so that only the machinery around it differs:

- every call is appended to an invocation log (a plain file, written with one ``write``
  per call, outside any ledger transaction) so "rows redone" is counted by the work itself;
- the effect is an INSERT into ``bench.receiver``, which has no unique constraint, so a
  second delivery of the same effect is visible as a duplicate row;
- in a crash scenario the process doing the work SIGKILLs itself at row ``kill_at``, after
  that row's effect was delivered and before the system can record the row as done. That is
  the window that separates "resumes at the right row" from "effects happen once". It
  happens on the first attempt only: a marker file records that the kill was done.

Configuration comes from the environment so that it crosses every process boundary
(Dagster's step subprocess, DBOS's recovery thread) unchanged.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

DB_URL_ENV = "BENCH_DB_URL"
SCENARIO_ENV = "BENCH_SCENARIO"
ROWS_ENV = "BENCH_ROWS"
KILL_AT_ENV = "BENCH_KILL_AT"
KILL_POINT_ENV = "BENCH_KILL_POINT"
KILL_MARKER_ENV = "BENCH_KILL_MARKER"
INVOCATIONS_ENV = "BENCH_INVOCATIONS_FILE"

# Kill after the effect left (the at-least-once window) or before it was sent.
AFTER_EFFECT = "after-effect"
BEFORE_EFFECT = "before-effect"

RECEIVER_DDL = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE IF NOT EXISTS bench.receiver (
    scenario     text        NOT NULL,
    effect_key   text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS receiver_by_scenario ON bench.receiver (scenario);
"""

INSERT_EFFECT = "INSERT INTO bench.receiver (scenario, effect_key) VALUES (%s, %s)"


def row_key(index: int) -> str:
    """The stable key of row ``index``; also the effect's idempotency key."""
    return f"row-{index:06d}"


@dataclass(frozen=True)
class BenchSettings:
    """What one worker process was asked to do (read from the environment)."""

    db_url: str
    scenario: str
    rows: int
    kill_at: int | None
    kill_point: str
    kill_marker: Path | None
    invocations_file: Path

    @classmethod
    def from_env(cls) -> BenchSettings:
        """Read the settings the harness put in this process's environment."""
        kill_at = os.environ.get(KILL_AT_ENV)
        marker = os.environ.get(KILL_MARKER_ENV)
        return cls(
            db_url=os.environ[DB_URL_ENV],
            scenario=os.environ[SCENARIO_ENV],
            rows=int(os.environ[ROWS_ENV]),
            kill_at=int(kill_at) if kill_at else None,
            kill_point=os.environ.get(KILL_POINT_ENV, AFTER_EFFECT),
            kill_marker=Path(marker) if marker else None,
            invocations_file=Path(os.environ[INVOCATIONS_ENV]),
        )


class RowWork:
    """The per-row handler, with its receiver connection and invocation log held open."""

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        # Autocommit: the effect is delivered the moment execute() returns, like an API call.
        self._conn = psycopg.connect(libpq_url(settings.db_url), autocommit=True)
        self._log_fd = os.open(
            settings.invocations_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )

    @classmethod
    def from_env(cls) -> RowWork:
        """A handler configured by the harness's environment."""
        return cls(BenchSettings.from_env())

    def record_invocation(self, index: int) -> None:
        """Append one line per call; a single write() survives the SIGKILL that follows it."""
        os.write(self._log_fd, f"{row_key(index)} {os.getpid()}\n".encode())

    def send_effect(self, index: int) -> None:
        """Deliver row ``index``'s effect to the receiver (no dedup on the receiving side)."""
        self._conn.execute(INSERT_EFFECT, (self.settings.scenario, row_key(index)))

    def was_delivered(self, key: str) -> bool:
        """Whether the receiver holds the effect ``key`` (what a reconcile call would ask)."""
        found = self._conn.execute(
            "SELECT 1 FROM bench.receiver WHERE scenario = %s AND effect_key = %s LIMIT 1",
            (self.settings.scenario, key),
        ).fetchone()
        return found is not None

    def maybe_die(self, index: int, point: str) -> None:
        """SIGKILL this process at the configured row and point, on the first attempt only."""
        s = self.settings
        if s.kill_at is None or index != s.kill_at or point != s.kill_point:
            return
        if s.kill_marker is None or s.kill_marker.exists():
            return
        s.kill_marker.write_text(f"{os.getpid()} {time.time()}\n")
        os.kill(os.getpid(), signal.SIGKILL)

    def handle(self, index: int) -> str:
        """Process row ``index``: count the call, deliver its effect, maybe die; return its key."""
        self.record_invocation(index)
        self.maybe_die(index, BEFORE_EFFECT)
        self.send_effect(index)
        self.maybe_die(index, AFTER_EFFECT)
        return row_key(index)

    def close(self) -> None:
        """Release the connection and the log file."""
        self._conn.close()
        os.close(self._log_fd)


def libpq_url(url: str) -> str:
    """A URL psycopg accepts (SQLAlchemy driver suffixes removed)."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url
