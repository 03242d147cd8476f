"""Which database a command talks to: resolved once, said once (masked), embedded or not.

Every command that touches Postgres calls ``resolve_database``: a person reading the output
knows whether "No interrupted runs" is about their server or about an embedded Postgres
that was just started under ``$ORBIT_HOME``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

# orbit_pipelines.store.urls is imported where it is used: it imports SQLAlchemy, which the
# CLI's start (`orbit --help`, a usage error under --json) does not need.


@dataclass(frozen=True)
class Database:
    """The database in use: its URL (secret), how to print it, and whether it is embedded."""

    url: str
    embedded: bool

    @property
    def masked(self) -> str:
        """The URL with every password masked."""
        from orbit_pipelines.store.urls import mask_url

        return mask_url(self.url)

    def describe(self) -> str:
        """One line for a person."""
        from orbit_pipelines.store.urls import orbit_home

        if self.embedded:
            return (
                f"{self.masked} (the embedded Postgres under {orbit_home()}, because "
                "ORBIT_POSTGRES_URL is unset)"
            )
        return f"{self.masked} (from ORBIT_POSTGRES_URL)"

    def as_json(self) -> dict[str, object]:
        """The fields every --json output carries."""
        return {"url": self.masked, "embedded": self.embedded}


_current: Database | None = None


def resolve_database(*, announce: bool = True) -> Database:
    """Resolve the database (starting the embedded one if needed); say which on stderr.

    The announcement goes to stderr so that stdout stays the command's answer (JSON under
    --json, where ``print_json`` adds the same facts as a ``database`` field).
    """
    from orbit_pipelines.store.urls import configured_url, resolve_url

    global _current
    embedded = configured_url() is None
    database = Database(resolve_url(), embedded)
    _current = database
    if announce:
        print(f"orbit: database {database.describe()}", file=sys.stderr)
    return database


def current_database() -> Database | None:
    """The database the running command resolved, if it did."""
    return _current


def forget_database() -> None:
    """Reset between two commands run in one process (tests call ``main`` repeatedly)."""
    global _current
    _current = None
