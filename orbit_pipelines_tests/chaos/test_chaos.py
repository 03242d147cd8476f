"""The chaos runner's short version: a few rounds, each killing something different."""

from __future__ import annotations

import json

import pytest

from orbit_pipelines_tests.chaos.runner import main


@pytest.mark.e2e
def test_three_rounds_of_chaos_lose_nothing_and_repeat_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """shipments' run worker SIGKILLed, Postgres crashed and restarted under sales_rollup,
    a shipments shard's step process SIGKILLed: every order is shipped once, totals equal a
    crash-free run, no run is left without an outcome."""
    code = main(
        [
            "--rounds",
            "3",
            "--seed",
            "8",
            "--in-order",
            "--jobs",
            "shipments,sales_rollup,shipments",
            "--kinds",
            "worker,postgres,step",
        ]
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(line)
    assert summary["rounds"] == 3, summary
    assert summary["lost"] == 0, summary
    assert summary["duplicated"] == 0, summary
    assert summary["failed_rounds"] == [], summary
    assert sum(summary["kills"].values()) + summary["missed_kills"] == 3, summary
    assert summary["jobs"] == {"shipments": 2, "sales_rollup": 1}, summary
    assert summary["kills"]["step"] + summary["kills"]["worker"] >= 1, summary
    assert code == 0, summary
