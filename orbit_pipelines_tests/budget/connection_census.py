"""Who holds which connections to one database, sampled while a job runs.

``pg_stat_activity`` (filtered by the database's name) says how many sessions there are
and which are orbit's (``application_name``); the client port of each session, matched
with this machine's sockets, says which process holds it. Sessions over a Unix socket have
no port and count only in the totals.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

import psutil
import psycopg

ORBIT_APP = "orbit_pipelines"
PROBE_APP = "orbit_connection_census"


@dataclass(frozen=True)
class Sample:
    """One look: per pid, (orbit's sessions, every session); plus unattributed sessions."""

    by_pid: dict[int, tuple[int, int]]
    unattributed: int
    total: int


@dataclass
class Census:
    """Samples the sessions of ``database`` every ``every_s`` until stopped."""

    admin_url: str
    database: str
    server_port: int
    every_s: float = 0.1
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="connection-census", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Census:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        try:
            with psycopg.connect(
                self.admin_url, autocommit=True, application_name=PROBE_APP
            ) as conn:
                while not self._stop.wait(self.every_s):
                    self.samples.append(self._sample(conn))
        except BaseException as error:  # reported by the test, not lost in a thread
            self.error = error

    def _sample(self, conn: psycopg.Connection) -> Sample:
        rows = conn.execute(
            "SELECT client_port, application_name FROM pg_stat_activity"
            " WHERE datname = %s AND application_name <> %s",
            (self.database, PROBE_APP),
        ).fetchall()
        owners = {
            c.laddr.port: c.pid
            for c in psutil.net_connections(kind="tcp")
            if c.raddr and c.raddr.port == self.server_port and c.pid is not None
        }
        orbit: Counter[int] = Counter()
        every: Counter[int] = Counter()
        unattributed = 0
        for port, app in rows:
            pid = owners.get(port) if port is not None and port >= 0 else None
            if pid is None:
                unattributed += 1
                continue
            every[pid] += 1
            orbit[pid] += app == ORBIT_APP
        return Sample(
            by_pid={pid: (orbit[pid], every[pid]) for pid in every},
            unattributed=unattributed,
            total=len(rows),
        )
