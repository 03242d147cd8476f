"""The chaos runner's short version: a few rounds, each killing something different."""

from __future__ import annotations

import json

import pytest

from orbit_pipelines_tests.chaos.runner import main


@pytest.mark.e2e
def test_three_rounds_of_chaos_lose_nothing_and_repeat_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run worker SIGKILLed, Postgres crashed and restarted, the daemon SIGKILLed and
    restarted: every order is shipped once, totals equal a crash-free run, nothing stuck."""
    code = main(["--rounds", "3", "--seed", "8", "--kinds", "worker,postgres,daemon"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(line)
    assert summary["rounds"] == 3, summary
    assert summary["lost"] == 0, summary
    assert summary["duplicated"] == 0, summary
    assert summary["failed_rounds"] == [], summary
    assert sum(summary["kills"].values()) + summary["missed_kills"] == 3, summary
    assert sum(1 for n in summary["kills"].values() if n) >= 2, summary
    assert code == 0, summary
