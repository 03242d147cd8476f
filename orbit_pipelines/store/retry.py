"""Retry Postgres work on transient errors only, with exponential backoff and jitter.

Transient: the server is restarting, refusing connections for a moment, out of connection
slots, or dropped the connection; a serialization failure or deadlock. Everything else
(wrong password, missing database, unknown host, a bug in our SQL) fails at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from sqlalchemy import exc as sa_exc

T = TypeVar("T")

# SQLSTATEs worth retrying. 08: connection exceptions; 57P01-57P03: admin shutdown, crash
# shutdown, cannot connect now (starting up); 53300: too many connections; 40001/40P01:
# serialization failure / deadlock (the transaction can simply run again).
_TRANSIENT_SQLSTATE_PREFIXES = ("08",)
_TRANSIENT_SQLSTATES = {"57P01", "57P02", "57P03", "53300", "40001", "40P01"}

# libpq reports connect-time failures without a SQLSTATE; these fragments are transient.
_TRANSIENT_MESSAGES = (
    "connection refused",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "server closed the connection unexpectedly",
    "terminating connection",
    "connection timeout expired",
    "timeout expired",
    "no such file or directory",  # unix socket not there yet: the server is (re)starting
    "sorry, too many clients",
    "consuming input failed",
    "connection is lost",
    "the connection is closed",
)


def _root_cause(error: BaseException) -> BaseException:
    if isinstance(error, sa_exc.DBAPIError) and error.orig is not None:
        return error.orig
    return error


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same operation may succeed."""
    cause = _root_cause(error)
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(cause, psycopg.Error):
        return False
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate:
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    if isinstance(cause, psycopg.OperationalError):
        text = str(cause).lower()
        return any(fragment in text for fragment in _TRANSIENT_MESSAGES)
    return False


def backoff_delays(
    budget_s: float, *, first_s: float = 0.1, cap_s: float = 2.0
) -> Callable[[], float | None]:
    """A delay generator: returns the next sleep, or None when the time budget is spent."""
    deadline = time.monotonic() + budget_s
    attempt = 0

    def next_delay() -> float | None:
        nonlocal attempt
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        delay = min(cap_s, first_s * 2**attempt)
        attempt += 1
        # Full jitter keeps many workers from hammering a restarting server in step.
        return min(remaining, random.uniform(delay / 2, delay))

    return next_delay


def retry_transient(fn: Callable[[], T], *, budget_s: float) -> T:
    """Run ``fn``; on a transient Postgres error retry with backoff until ``budget_s`` is spent."""
    next_delay = backoff_delays(budget_s)
    while True:
        try:
            return fn()
        except (psycopg.Error, sa_exc.DBAPIError) as error:
            if not is_transient(error):
                raise
            delay = next_delay()
            if delay is None:
                raise
            time.sleep(delay)
