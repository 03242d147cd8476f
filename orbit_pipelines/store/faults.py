"""Which errors are the infrastructure's fault, never a row's.

A row handler that meets a database that is down, restarting, out of connection slots,
out of disk or read-only has done nothing wrong: quarantining its row would set aside
good work and let the run group end "successfully" without it. The executor asks
``is_infrastructure`` before it records anything about a failing row.
"""

from __future__ import annotations

import psycopg
from sqlalchemy import exc as sa_exc

from orbit_pipelines.store.retry import is_transient

# Beyond the transient ones: 53xxx insufficient resources (disk full, out of memory, too
# many connections), 58xxx system errors (I/O), 25006 read-only transaction (a standby or
# a read-only switch), 25P03 idle-in-transaction timeout, 57014 statement cancelled by an
# operator or a timeout, 57P0x shutdowns, 40001/40P01 serialization failure and deadlock.
_INFRA_SQLSTATE_PREFIXES = ("08", "53", "57", "58", "40", "XX")
_INFRA_SQLSTATES = {"25006", "25P03", "55P03", "F0000"}


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not s for s in seen) and len(seen) < 20:
        seen.append(current)
        if isinstance(current, sa_exc.DBAPIError) and current.orig is not None:
            seen.append(current.orig)
        current = current.__cause__ or current.__context__
    return seen


def _is_infra_one(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True  # TimeoutError: the engine's pool had no connection to give
    if not isinstance(error, psycopg.Error):
        return False
    if is_transient(error):
        return True
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return True  # connection-level by definition: libpq reports no SQLSTATE for most
    sqlstate = error.sqlstate or ""
    return sqlstate in _INFRA_SQLSTATES or sqlstate.startswith(_INFRA_SQLSTATE_PREFIXES)


def is_infrastructure(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a database/connection fault, not a row's."""
    return any(_is_infra_one(e) for e in _chain(error))
