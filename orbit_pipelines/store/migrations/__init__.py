"""Schema migrations: ordered SQL files, a version table, a Postgres advisory lock.

Files are named ``NNNN_description.sql``; the number is the version. ``upgrade`` applies
every pending file in one transaction while holding a transaction-scoped advisory lock,
so two processes that start at once on an empty database end with one correct schema:
the second waits for the lock, then finds nothing left to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from sqlalchemy import Connection, Engine, text

from orbit_pipelines.errors import E2004_SCHEMA_OUTDATED, E2005_SCHEMA_NEWER, OrbitError

SCHEMA = "orbit"
# Any fixed 64-bit number works; this one is "orbit" in ASCII, so it is recognisable in pg_locks.
MIGRATION_LOCK_KEY = 0x6F72626974

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One SQL file of the schema history."""

    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands against the migrations this code ships."""

    current: int
    latest: int
    pending: tuple[Migration, ...]

    @property
    def is_current(self) -> bool:
        """True when nothing is pending and the database is not ahead of the code."""
        return self.current == self.latest

    def describe(self) -> str:
        """One line for a person."""
        if self.current == self.latest:
            return f"orbit schema is current (version {self.current})"
        if self.current > self.latest:
            return (
                f"orbit schema is at version {self.current}, newer than this code "
                f"(knows {self.latest}); upgrade orbit_pipelines"
            )
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in self.pending)
        return (
            f"orbit schema is at version {self.current}, code expects {self.latest}; "
            f"pending: {names}. Run `orbit db upgrade`."
        )


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files(__package__).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migration files share a version: {versions}")
    return found


def _current_version(conn: Connection) -> int:
    exists = conn.execute(
        text("SELECT to_regclass(:name) IS NOT NULL"), {"name": f"{SCHEMA}.schema_migrations"}
    ).scalar_one()
    if not exists:
        return 0
    version = conn.execute(text("SELECT max(version) FROM orbit.schema_migrations")).scalar()
    return int(version or 0)


def _ensure_version_table(conn: Connection) -> None:
    conn.execute(text("CREATE SCHEMA IF NOT EXISTS orbit"))
    conn.execute(
        text(
            "CREATE TABLE IF NOT EXISTS orbit.schema_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
    )


def _run_script(conn: Connection, sql: str) -> None:
    # A migration file holds several statements; psycopg runs a parameterless multi-statement
    # string in one round trip, inside the transaction SQLAlchemy already opened.
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def status(engine: Engine) -> SchemaStatus:
    """Read-only: compare the database's version with the shipped migrations."""
    migrations = available_migrations()
    latest = migrations[-1].version if migrations else 0
    with engine.connect() as conn:
        current = _current_version(conn)
    pending = tuple(m for m in migrations if m.version > current)
    return SchemaStatus(current=current, latest=latest, pending=pending)


def upgrade(engine: Engine) -> list[Migration]:
    """Apply every pending migration; returns the ones this call applied (often none)."""
    migrations = available_migrations()
    latest = migrations[-1].version if migrations else 0
    # Cheap check without the lock: the common case is a current schema.
    with engine.connect() as conn:
        if _current_version(conn) == latest:
            return []
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        current = _current_version(conn)
        if current > latest:
            raise OrbitError(
                E2005_SCHEMA_NEWER,
                f"orbit schema is at version {current}, newer than this code (knows {latest})",
                hint="upgrade orbit_pipelines on this machine",
            )
        _ensure_version_table(conn)
        applied: list[Migration] = []
        for migration in migrations:
            if migration.version <= current:
                continue
            _run_script(conn, migration.sql)
            conn.execute(
                text("INSERT INTO orbit.schema_migrations (version, name) VALUES (:v, :n)"),
                {"v": migration.version, "n": migration.name},
            )
            applied.append(migration)
        return applied


def require_current(engine: Engine) -> None:
    """Raise E-2004/E-2005 unless the schema matches this code (for read-only callers)."""
    state = status(engine)
    if state.current > state.latest:
        raise OrbitError(E2005_SCHEMA_NEWER, state.describe())
    if not state.is_current:
        raise OrbitError(E2004_SCHEMA_OUTDATED, state.describe())
