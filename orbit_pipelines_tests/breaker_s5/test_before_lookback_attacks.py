"""Breaker attacks on 6f68053 (check-interrupted lists failures from before the sensor's
lookback): a group with two failed runs, a group failed on both sides of the lookback, a
group with odd run ids, many old failures. Real Dagster instance on Postgres."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import DagsterInstance
from sqlalchemy import Engine

from orbit_pipelines.recovery import detect
from orbit_pipelines.recovery.launch import ROOT_RUN_ID_TAG
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.tags import PARENT_RUN_ID_TAG
from orbit_pipelines_tests.breaker_s4.test_failed_before_lookback import _wait_past_lookback
from orbit_pipelines_tests.cli.conftest import CliResult
from orbit_pipelines_tests.recovery.many_runs import failed_runs, started_runs

LOOKBACK_S = 1.0


@pytest.fixture
def orbit(orbit_cli: Callable[..., CliResult]) -> Callable[..., CliResult]:
    return orbit_cli


def _listed(orbit: Callable[..., CliResult]) -> tuple[int, dict]:
    answer = orbit("check-interrupted", "--json")
    return answer.returncode, json.loads(answer.stdout)


def test_a_group_with_two_old_failed_runs_is_listed_once_at_its_latest(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch, orbit: Callable[..., CliResult]
) -> None:
    # The group's first run failed, a later run of the group (no parent tag: started by
    # hand with the root tag) failed too; neither is a re-execution of the other.
    monkeypatch.setenv("ORBIT_RECOVERY_FAILED_LOOKBACK_S", str(LOOKBACK_S))
    instance = DagsterInstance.get()
    [root] = failed_runs(instance, 1)
    [later] = failed_runs(instance, 1, {ROOT_RUN_ID_TAG: root})
    _wait_past_lookback(instance, [root, later])
    code, shown = _listed(orbit)
    assert code == 1
    roots = Counter(g["root_run_id"] for g in shown["interrupted"])
    assert roots == {root: 1}
    [group] = shown["interrupted"]
    assert group["latest_run_id"] == later and group["before_lookback"] is True


def test_a_group_failed_before_and_again_within_the_lookback_is_listed_once(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch, orbit: Callable[..., CliResult]
) -> None:
    # Its original failed long ago; a re-execution of it failed just now: the sensor will
    # see the new failure, so the group is a recent one, never "before the lookback".
    lookback = 4.0
    monkeypatch.setenv("ORBIT_RECOVERY_FAILED_LOOKBACK_S", str(lookback))
    instance = DagsterInstance.get()
    [root] = failed_runs(instance, 1)
    record = instance.get_run_record_by_id(root)
    assert record is not None and record.end_time is not None
    while time.time() - record.end_time <= lookback + 0.5:
        time.sleep(0.2)
    [child] = failed_runs(instance, 1, {ROOT_RUN_ID_TAG: root, PARENT_RUN_ID_TAG: root})
    _, shown = _listed(orbit)
    groups = [g for g in shown["interrupted"] if g["root_run_id"] == root]
    assert len(groups) == 1
    assert groups[0]["latest_run_id"] == child and groups[0]["before_lookback"] is False
    assert shown["before_lookback_scan"]["failures_scanned"] == 1


def test_many_old_failures_all_recovered_since_leave_one_waiting_listed(
    dagster_home: Path,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    orbit: Callable[..., CliResult],
) -> None:
    # 250 old failures re-executed since (three pages of 100), one not: the waiting one is
    # the oldest, so only the last page finds it. (1,200 with the real page of 1,000 pass
    # too, in 2.5 min of run creation.)
    monkeypatch.setenv("ORBIT_RECOVERY_FAILED_LOOKBACK_S", str(LOOKBACK_S))
    monkeypatch.setattr(detect, "LISTING_PAGE", 100)
    instance = DagsterInstance.get()
    [waiting] = failed_runs(instance, 1)
    handled = failed_runs(instance, 250)
    for run_id in handled:
        started_runs(instance, 1, {ROOT_RUN_ID_TAG: run_id, PARENT_RUN_ID_TAG: run_id})
    _wait_past_lookback(instance, [waiting, *handled[-1:]])
    started = time.monotonic()
    with engine.connect() as conn:
        older = detect.detect_failed_before_lookback(
            instance, conn, RecoverySettings(failed_lookback_s=LOOKBACK_S)
        )
    took = time.monotonic() - started
    assert [c.run_id for c in older.candidates] == [waiting]
    assert (older.scanned, older.complete) == (251, True)
    print(f"before-lookback scan of 251 failures: {took:.2f}s, load {os.getloadavg()}")
    assert took < 30
    code, shown = _listed(orbit)
    assert code == 1
    assert [g["root_run_id"] for g in shown["interrupted"]] == [waiting]


@pytest.mark.parametrize("run_id", ["", "'; DROP TABLE runs; --", "%", "a" * 300])
def test_status_of_an_odd_run_id_is_an_answer_not_a_crash(
    dagster_home: Path, orbit: Callable[..., CliResult], run_id: str
) -> None:
    failed_runs(DagsterInstance.get(), 1)
    shown = orbit("status", run_id)
    assert shown.returncode != 0
    assert "Traceback" not in shown.stderr + shown.stdout
