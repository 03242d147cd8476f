"""The real deployment a chaos round runs against: our own Postgres, the carrier, a
``dagster-daemon`` on the shipped code location (orbit_examples.definitions) with the
recovery sensor on short intervals.

The one harness (``orbit_pipelines_tests.deployment``: daemon, status, run-group and
process-tree helpers) configured with what the example jobs need: the shipped workspace and
the carrier's URL and token in the environment of every Dagster process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orbit_pipelines.dagster_io.dagster_home import shipped_config
from orbit_pipelines.store.heartbeats import Heartbeat
from orbit_pipelines_tests.carrier.running import TOKEN, RunningCarrier
from orbit_pipelines_tests.deployment import ENDED, Deployment

# Short recovery timings so a round takes seconds (see orbit_pipelines/recovery/settings.py).
CHAOS_SETTINGS = {
    "ORBIT_RECOVERY_INTERVAL_S": "2",
    "ORBIT_RECOVERY_HEARTBEAT_TIMEOUT_S": "6",
    "ORBIT_RECOVERY_STALL_TIMEOUT_S": "60",
    # A run killed before its first heartbeat (while loading) is judged by Dagster events.
    "ORBIT_RECOVERY_START_GRACE_S": "30",
    "ORBIT_RECOVERY_BACKOFF_BASE_S": "2",
    "ORBIT_RECOVERY_BACKOFF_MAX_S": "10",
    "ORBIT_RECOVERY_MAX_ATTEMPTS": "6",
    "ORBIT_RECOVERY_TERMINATE_WAIT_S": "3",
    "ORBIT_RECOVERY_LAUNCH_TAKEOVER_S": "20",
}

TERMINAL = ENDED


@dataclass
class ChaosHarness(Deployment):
    """The one harness on the shipped code location with a carrier."""

    settings_env: dict[str, str] = field(default_factory=lambda: dict(CHAOS_SETTINGS))
    carrier: RunningCarrier | None = None

    def write_workspace(self) -> Path:
        """The real code location, exactly as `orbit dev` serves it."""
        return shipped_config("workspace.yaml")

    def env(self) -> dict[str, str]:
        """The harness environment plus the carrier's address and token."""
        env = super().env()
        if self.carrier is not None:
            env["ORBIT_CARRIER_URL"] = self.carrier.url
            env["ORBIT_CARRIER_TOKEN"] = TOKEN
        env.update(self.extra_env)
        return env

    def beats(self, run_ids: list[str]) -> list[Heartbeat]:
        """Heartbeats of these runs' row steps."""
        return self.heartbeats(run_ids)


__all__ = ["CHAOS_SETTINGS", "TERMINAL", "ChaosHarness"]
