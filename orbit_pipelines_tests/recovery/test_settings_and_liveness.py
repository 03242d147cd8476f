"""Settings from the environment; pid liveness with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from orbit_pipelines.errors import OrbitError
from orbit_pipelines.recovery.liveness import pid_alive
from orbit_pipelines.recovery.settings import RecoverySettings


def test_defaults_match_the_issue() -> None:
    settings = RecoverySettings.from_env({})
    assert (settings.interval_s, settings.heartbeat_timeout_s, settings.stall_timeout_s) == (
        5,
        30.0,
        600.0,
    )
    assert settings.max_attempts == 3


def test_env_overrides_and_rejects_garbage() -> None:
    settings = RecoverySettings.from_env(
        {"ORBIT_RECOVERY_INTERVAL_S": "2", "ORBIT_RECOVERY_STALL_TIMEOUT_S": "6.5"}
    )
    assert settings.interval_s == 2 and settings.stall_timeout_s == 6.5
    with pytest.raises(OrbitError) as raised:
        RecoverySettings.from_env({"ORBIT_RECOVERY_MAX_ATTEMPTS": "three"})
    assert raised.value.code == "E-2008"


def test_pid_alive_sees_live_zombie_and_reaped_processes() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        # Killed but not reaped yet: a zombie does no work, so it is dead.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert not pid_alive(child.pid)
    finally:
        child.wait()
    assert not pid_alive(child.pid)


@pytest.mark.parametrize(
    "env",
    [
        {"ORBIT_RECOVERY_HEARTBEAT_TIMEOUT_S": "-1"},
        {"ORBIT_RECOVERY_MAX_ATTEMPTS": "-2"},
        {"ORBIT_RECOVERY_BACKOFF_BASE_S": "nan"},
        {"ORBIT_RECOVERY_STALL_TIMEOUT_S": "inf"},
        {"ORBIT_RECOVERY_INTERVAL_S": "0"},
    ],
)
def test_negative_or_non_finite_recovery_settings_are_e2008(env: dict[str, str]) -> None:
    with pytest.raises(OrbitError) as raised:
        RecoverySettings.from_env(env)
    assert raised.value.code == "E-2008"
    assert next(iter(env)) in raised.value.message
