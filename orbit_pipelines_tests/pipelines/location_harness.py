"""The real code location (``orbit_examples.definitions``) under a real ``dagster-daemon``.

The end-to-end tests of the example jobs share this: the one harness of
``orbit_pipelines_tests.deployment`` (daemon, ``dagster job launch``, waits, the event log
and ledger questions) pointed at the shipped code location, with the fast run queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from orbit_pipelines_tests.deployment import ENDED, QUEUE_FAST, Deployment

LOCATION = "orbit_pipelines"
MODULE = "orbit_examples.definitions"
# How Dagster's multiprocess executor reports a step whose process was SIGKILLed.
CRASH = "dagster._core.executor.child_process_executor.ChildProcessCrashException"

# A short sensor interval so a test takes seconds. The injected kill makes the run FAILURE
# at once, so the heartbeat/stall timeouts stay at their defaults: short ones could take a
# slow step on a loaded 2-core box for a dead one and start a second recovery.
RECOVERY_ENV = {
    "ORBIT_RECOVERY_INTERVAL_S": "2",
    "ORBIT_RECOVERY_BACKOFF_BASE_S": "2",
}


@dataclass
class LocationHarness(Deployment):
    """A Dagster deployment of ``orbit_examples.definitions`` on one test's database."""

    module: ClassVar[str] = MODULE
    location: ClassVar[str] = LOCATION
    fast_queue: ClassVar[bool] = True

    settings_env: dict[str, str] = field(default_factory=lambda: dict(RECOVERY_ENV))


__all__ = ["CRASH", "ENDED", "LOCATION", "MODULE", "QUEUE_FAST", "RECOVERY_ENV", "LocationHarness"]
