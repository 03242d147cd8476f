"""Error codes a user can act on.

Every error orbit_pipelines raises on purpose carries a code from one family:

- ``E-1xxx`` input / validation (never retried automatically)
- ``E-2xxx`` configuration
- ``E-3xxx`` external service (retryable unless stated)
- ``E-4xxx`` step logic
- ``E-5xxx`` auth / permission (never retried automatically)

This module imports nothing from dagster: every layer may use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    """A registered error code: its identifier, a short title and whether a retry may help."""

    code: str
    title: str
    retryable: bool

    @property
    def family(self) -> int:
        """The thousands digit: 1 input, 2 config, 3 external, 4 step logic, 5 auth."""
        return int(self.code[2])


_REGISTRY: dict[str, ErrorCode] = {}


def _register(code: str, title: str, *, retryable: bool) -> ErrorCode:
    if code in _REGISTRY:
        raise ValueError(f"error code {code} registered twice")
    error = ErrorCode(code, title, retryable)
    _REGISTRY[code] = error
    return error


# E-1xxx input / validation
E1003_INVALID_VALUE = _register(
    "E-1003", "input value has the wrong type or range", retryable=False
)
E1010_UNKNOWN_RUN = _register("E-1010", "no such run", retryable=False)
E1011_NOT_INTERRUPTED = _register("E-1011", "run is not interrupted", retryable=False)
E1012_NOT_CONFIRMED = _register("E-1012", "action needs confirmation", retryable=False)
E1013_KEY_MISSING = _register("E-1013", "row key is missing", retryable=False)
E1014_KEY_UNUSABLE = _register("E-1014", "row key cannot be used as a key", retryable=False)
E1015_VALUE_UNRECORDABLE = _register(
    "E-1015", "row value cannot be recorded or aggregated", retryable=False
)

# E-2xxx configuration
E2001_DB_UNREACHABLE = _register("E-2001", "cannot reach Postgres", retryable=True)
E2002_DB_AUTH = _register("E-2002", "Postgres rejected the credentials", retryable=False)
E2003_DB_MISSING = _register("E-2003", "Postgres database does not exist", retryable=False)
E2004_SCHEMA_OUTDATED = _register("E-2004", "orbit schema is not current", retryable=False)
E2005_SCHEMA_NEWER = _register("E-2005", "orbit schema is newer than this code", retryable=False)
E2006_EMBEDDED_FAILED = _register("E-2006", "embedded Postgres failed to start", retryable=False)
E2007_BAD_URL = _register("E-2007", "malformed Postgres URL", retryable=False)
E2008_BAD_CONFIG = _register("E-2008", "invalid configuration", retryable=False)
E2009_UNSTORABLE_OUTPUT = _register(
    "E-2009", "step output cannot be stored without pickle", retryable=False
)

# E-3xxx external service
E3001_SERVICE_TIMEOUT = _register("E-3001", "external service timed out", retryable=True)
E3002_RATE_LIMITED = _register(
    "E-3002", "external service rate-limited the request", retryable=True
)
E3004_SERVICE_UNAVAILABLE = _register("E-3004", "external service unavailable", retryable=True)
E3005_REQUEST_REFUSED = _register(
    "E-3005", "external service refused the request as invalid", retryable=False
)
E3010_DATABASE_UNAVAILABLE = _register(
    "E-3010", "Postgres unavailable, restarting or out of connections", retryable=True
)

# E-4xxx step logic
E4001_STEP_FAILED = _register("E-4001", "step failed", retryable=True)
E4002_EFFECT_IN_DOUBT = _register("E-4002", "side effect outcome unknown", retryable=False)
E4003_STALE_CHECKPOINT = _register(
    "E-4003", "checkpointed output was produced by different code", retryable=False
)
E4004_ROW_FAILED = _register("E-4004", "row handler raised", retryable=True)
E4005_CHECKPOINT_MISSING = _register("E-4005", "checkpointed output not found", retryable=False)
E4006_CHECKPOINT_CORRUPT = _register(
    "E-4006", "checkpointed output does not match its content hash", retryable=False
)
E4007_EFFECT_KEY_REUSED = _register(
    "E-4007", "effect key already used by another row", retryable=False
)
E4008_EFFECT_RESULT_UNRECORDABLE = _register(
    "E-4008", "effect result cannot be recorded", retryable=False
)
E4009_STALE_EXECUTION = _register(
    "E-4009", "stale execution: a newer execution owns this step", retryable=False
)
E4010_NOT_RECOVERABLE = _register(
    "E-4010", "run cannot be re-executed from failure", retryable=False
)
E4011_WORKER_KILLED = _register("E-4011", "worker process killed by a signal", retryable=True)

# E-5xxx auth / permission
E5001_UNAUTHORIZED = _register(
    "E-5001", "external service refused the credentials", retryable=False
)
E5002_FORBIDDEN = _register("E-5002", "permission denied", retryable=False)


def lookup(code: str) -> ErrorCode | None:
    """Return the registered code, or None when it is not one of ours."""
    return _REGISTRY.get(code)


def all_codes() -> list[ErrorCode]:
    """Every registered code, in code order."""
    return sorted(_REGISTRY.values(), key=lambda e: e.code)


def concerns_only_its_row(code: str) -> bool:
    """Whether a row's error can be set aside (quarantined) while the other rows go on.

    Bad input, a rejected request and a row's own logic error concern that row. A
    configuration or database error (E-2xxx) and refused credentials (E-5xxx) would fail
    every row the same way, and a retryable external error (a timeout) would pass on a
    retry: quarantining those would set aside rows that are fine, so they stop the step.
    """
    family = code[2:3]
    return family not in ("2", "5") and not (family == "3" and is_retryable(code))


def is_retryable(code: str | None) -> bool:
    """Whether automatic recovery may retry an error with this code.

    Input (E-1xxx) and auth (E-5xxx) are never retried; unknown codes and ``None`` (an
    unexpected exception) are retried, because a crash with no code is most often transient.
    """
    if code is None:
        return True
    known = lookup(code)
    if known is not None:
        return known.retryable
    family = code[2:3]
    return family not in ("1", "5")


class OrbitError(Exception):
    """An error with a code and a message a user can act on."""

    def __init__(self, error: ErrorCode, message: str, *, hint: str | None = None) -> None:
        self.error = error
        self.message = message
        self.hint = hint
        super().__init__(self.render())

    @property
    def code(self) -> str:
        """The ``E-nnnn`` code."""
        return self.error.code

    def render(self) -> str:
        """One line (plus an optional hint line) for a person."""
        text = f"{self.error.code} {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


def register_error_code(code: str, title: str, *, retryable: bool) -> ErrorCode:
    """Register an error code of your own pipelines, so orbit knows whether to retry it.

    ``code`` is ``E-`` and four digits whose first digit is its family: 1 input,
    2 configuration, 3 external service, 4 step logic, 5 auth. Raise it with
    ``OrbitError(error, message)``; the recovery sensor retries a failed step whose error is
    ``retryable`` and holds it for a person otherwise (E-1xxx and E-5xxx should not be
    retryable: a retry cannot fix bad input or refused credentials). Register each code
    once, at import time of the module that raises it.

    Registering the same code again with the same title and ``retryable`` returns the
    registered one (a module imported twice, e.g. under two names); raises ``ValueError``
    when the code is malformed, its family is not 1-5, or it is already registered
    differently (by orbit or by other user code).
    """
    if not re.fullmatch(r"E-[1-5]\d{3}", code):
        raise ValueError(
            f"error code {code!r} must look like E-1234 with family digit 1-5 "
            "(1 input, 2 configuration, 3 external service, 4 step logic, 5 auth)"
        )
    if not title.strip():
        raise ValueError(f"error code {code}: the title must not be empty")
    existing = _REGISTRY.get(code)
    if existing is not None:
        if (existing.title, existing.retryable) == (title, retryable):
            return existing
        raise ValueError(
            f"error code {code} is already registered ({existing.title!r}); pick another number"
        )
    return _register(code, title, retryable=retryable)
