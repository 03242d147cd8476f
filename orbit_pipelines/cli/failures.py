"""Exceptions from libraries turned into coded errors a person can act on (never a traceback).

The CLI's last line of defence: whatever a command raises ends as one ``E-nnnn`` line (or
a JSON object), with secrets masked. ``ORBIT_DEBUG=1`` re-raises for a developer.
"""

from __future__ import annotations

import re

from orbit_pipelines.errors import E2008_BAD_CONFIG, E4001_STEP_FAILED, OrbitError

_ENV_NOT_SET = re.compile(r'environment variable "([^"]+)" which is not set')
_CONFIG_PATH = re.compile(r"at path (\S+)")


def as_orbit_error(error: BaseException) -> OrbitError:
    """The coded error a person sees for ``error``."""
    if isinstance(error, OrbitError):
        return error
    text = str(error)
    missing = sorted(set(_ENV_NOT_SET.findall(text)))
    if missing:
        names = ", ".join(missing)
        path = _CONFIG_PATH.search(text)
        where = f" (needed by {path.group(1).rstrip(':')})" if path else ""
        return OrbitError(
            E2008_BAD_CONFIG,
            f"environment variable {names} is not set{where}",
            hint=f"set {names} in this shell (and for the daemon and code server), then retry",
        )
    if type(error).__name__ in ("DagsterInvalidConfigError", "DagsterInvalidConfigDefinitionError"):
        messages = getattr(error, "error_messages", None) or [text.splitlines()[0]]
        return OrbitError(
            E2008_BAD_CONFIG,
            f"invalid run or resource configuration: {'; '.join(str(m) for m in messages)}",
            hint="fix the job's config (resources, run config) and retry",
        )
    first = text.strip().splitlines()[0] if text.strip() else ""
    return OrbitError(
        E4001_STEP_FAILED,
        f"unexpected {type(error).__name__}" + (f": {first}" if first else ""),
        hint="set ORBIT_DEBUG=1 to see the traceback, and report it",
    )
