"""Recovery timings and limits, overridable by environment variables.

The sensor reads them at each tick (so a test can shorten them for the daemon it starts);
the interval is read once, when the code location loads, because Dagster fixes it then.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from orbit_pipelines.errors import E2008_BAD_CONFIG, OrbitError

ENV_PREFIX = "ORBIT_RECOVERY_"


@dataclass(frozen=True)
class RecoverySettings:
    """Every knob of automatic recovery. Times are seconds."""

    # 5 s: Dagster's sensor daemon looks at its sensors at most every 5 s
    # (MIN_INTERVAL_LOOP_TIME in dagster._daemon.sensor), so a shorter interval ticks no
    # sooner, and at 15 s (ticks 15-20 s apart) half the SIGKILLs of a run worker waited
    # more than 10 s for a tick (bench/recovery_latency.py, README "Benchmarks"). An idle
    # tick is a few indexed reads and Dagster's tick record (idle cost measured there too).
    interval_s: int = 5
    # Only for workers on another host or whose pid cannot be checked: a local dead pid is
    # found at the next tick whatever this says. 15 missed beats (heartbeat_every_s = 2)
    # before a live remote worker is declared dead: a loaded host or database delays a beat
    # by seconds, and a false "dead" re-executes a step that was still running.
    heartbeat_timeout_s: float = 30.0
    stall_timeout_s: float = 600.0
    # A STARTED run with no heartbeat at all and no Dagster event for this long is dead.
    start_grace_s: float = 600.0
    max_attempts: int = 3
    backoff_base_s: float = 30.0
    backoff_max_s: float = 600.0
    # +- this fraction of the backoff, fixed per run so every tick computes the same time.
    backoff_jitter: float = 0.2
    # A 'launching' row older than this was left by a launcher that crashed: take it over.
    launch_takeover_s: float = 120.0
    # FAILURE runs older than this are history, not something to recover now.
    failed_lookback_s: float = 24 * 3600.0
    # How long to wait for Dagster to terminate a hung run before killing its pid.
    terminate_wait_s: float = 5.0

    def __post_init__(self) -> None:
        # A negative timeout or budget would recover everything at once, or nothing ever.
        for field in fields(self):
            value = getattr(self, field.name)
            if value != value or value < 0 or value == float("inf"):
                raise OrbitError(
                    E2008_BAD_CONFIG,
                    f"recovery setting {field.name} ({ENV_PREFIX}{field.name.upper()}) "
                    f"must be a finite number >= 0, not {value!r}",
                )
        if self.interval_s < 1:
            raise OrbitError(
                E2008_BAD_CONFIG,
                f"recovery setting interval_s ({ENV_PREFIX}INTERVAL_S) must be >= 1, "
                f"not {self.interval_s!r}",
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RecoverySettings:
        """Defaults, overridden by ``ORBIT_RECOVERY_<FIELD>`` (e.g. ORBIT_RECOVERY_INTERVAL_S)."""
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = source.get(ENV_PREFIX + field.name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[field.name] = int(raw) if field.type in ("int", int) else float(raw)
            except ValueError:
                raise OrbitError(
                    E2008_BAD_CONFIG,
                    f"{ENV_PREFIX}{field.name.upper()}={raw!r} is not a number",
                ) from None
        return cls(**values)  # type: ignore[arg-type]
