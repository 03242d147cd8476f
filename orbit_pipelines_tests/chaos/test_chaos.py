"""The chaos runner's short version: a few rounds, each killing something different."""

from __future__ import annotations

import json

import pytest

from orbit_pipelines_tests.chaos.runner import main


@pytest.mark.e2e
def test_three_rounds_of_chaos_lose_nothing_and_repeat_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """sales_rollup's run worker SIGKILLed, a shipments shard's step process SIGKILLed,
    Postgres crashed and restarted under sales_rollup: every order is shipped once, totals
    equal a crash-free run, no run is left without an outcome.

    The run worker is not killed under shipments here: that loses the shards that had not
    started yet (test_unstarted_shards.py, xfail until recovery is fixed)."""
    code = main(
        [
            "--rounds",
            "3",
            "--seed",
            "8",
            "--in-order",
            "--jobs",
            "sales_rollup,shipments,sales_rollup",
            "--kinds",
            "worker,step,postgres",
        ]
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(line)
    assert summary["rounds"] == 3, summary
    assert summary["lost"] == 0, summary
    assert summary["duplicated"] == 0, summary
    assert summary["failed_rounds"] == [], summary
    assert sum(summary["kills"].values()) + summary["missed_kills"] == 3, summary
    assert summary["jobs"] == {"sales_rollup": 2, "shipments": 1}, summary
    assert summary["kills"]["step"] + summary["kills"]["worker"] >= 1, summary
    assert code == 0, summary
