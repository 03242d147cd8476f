"""Breaker (session 4): a run that failed before the recovery sensor's lookback
(``failed_lookback_s``, 24 h by default: the daemon was down over a weekend) is never
recovered automatically. ``orbit status`` said "Next: nothing to do" for it, and
``orbit status --watch`` ended on that too: a failed group whose rows were never processed,
and the tool told the person there was nothing to do. Real Dagster instance on Postgres;
the lookback is shortened by its environment variable instead of waiting a day."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import DagsterEvent, DagsterEventType, DagsterInstance
from sqlalchemy import Engine

from orbit_pipelines.recovery import detect
from orbit_pipelines.recovery.cycle import run_cycle
from orbit_pipelines.recovery.launch import ROOT_RUN_ID_TAG
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.tags import PARENT_RUN_ID_TAG
from orbit_pipelines_tests.cli.conftest import CliResult
from orbit_pipelines_tests.recovery.many_runs import failed_runs, quiet_job, started_runs

LOOKBACK_S = 1.0


@pytest.fixture
def old_failure(dagster_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ORBIT_RECOVERY_FAILED_LOOKBACK_S", str(LOOKBACK_S))
    instance = DagsterInstance.get()
    [run_id] = failed_runs(instance, 1, message="worker lost")
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.end_time is not None
    while time.time() - record.end_time <= 2 * LOOKBACK_S:  # a condition, not a duration
        time.sleep(0.2)
    return run_id


@pytest.fixture
def orbit(orbit_cli: Callable[..., CliResult]) -> Callable[..., CliResult]:
    return orbit_cli


def test_status_of_a_failure_before_the_lookback_says_a_person_must_act(
    old_failure: str, orbit: Callable[..., CliResult]
) -> None:
    shown = orbit("status", old_failure)
    assert shown.returncode == 1  # a person is needed (as --watch says)
    assert "nothing to do" not in shown.stdout
    assert f"orbit resume {old_failure}" in shown.stdout
    plan = json.loads(orbit("status", old_failure, "--json").stdout)["plan"]
    assert "nothing to do" not in plan and "lookback" in plan
    watched = orbit("status", old_failure, "--watch", "--interval", "1")
    assert watched.returncode == 1  # a person is needed
    assert "nothing to do" not in watched.stdout


def test_check_interrupted_lists_a_failure_before_the_lookback(
    old_failure: str, orbit: Callable[..., CliResult]
) -> None:
    answer = orbit("check-interrupted", "--json")
    assert answer.returncode == 1  # only a person will act on it
    shown = json.loads(answer.stdout)
    [group] = [g for g in shown["interrupted"] if g["latest_run_id"] == old_failure]
    assert group["before_lookback"] is True and group["needs_person"] is True
    assert group["state"] == "failed"
    assert "before the lookback: the sensor will not recover it" in group["plan"]
    assert f"orbit resume {old_failure}" in group["plan"]
    assert shown["before_lookback_scan"] == {"failures_scanned": 1, "complete": True}
    text = orbit("check-interrupted").stdout
    assert "(failed, before the lookback)" in text
    assert "before the lookback: the sensor will not recover it" in text
    assert f"orbit resume {old_failure}" in text
    planned = orbit("recover", "--json")  # the same listing, without acting
    assert planned.returncode == 1
    [group] = json.loads(planned.stdout)["interrupted"]
    assert (group["latest_run_id"], group["before_lookback"]) == (old_failure, True)


def _succeed(instance: DagsterInstance, run_id: str) -> None:
    instance.report_dagster_event(
        DagsterEvent(
            event_type_value=DagsterEventType.RUN_SUCCESS.value,
            job_name=quiet_job.name,
            message="finished",
        ),
        run_id=run_id,
    )


def _wait_past_lookback(instance: DagsterInstance, run_ids: list[str]) -> None:
    ends = []
    for run_id in run_ids:
        record = instance.get_run_record_by_id(run_id)
        assert record is not None and record.end_time is not None
        ends.append(record.end_time)
    while time.time() - max(ends) <= 2 * LOOKBACK_S:  # a condition, not a duration
        time.sleep(0.2)


def test_only_groups_a_person_must_act_on_are_listed_from_before_the_lookback(
    dagster_home: Path, monkeypatch: pytest.MonkeyPatch, orbit: Callable[..., CliResult]
) -> None:
    """Of five old failures, one is listed: the others were re-executed and succeeded, had
    a later run of the group succeed (no parent tag on it), are running again, or were
    abandoned with ``orbit cancel``."""
    monkeypatch.setenv("ORBIT_RECOVERY_FAILED_LOOKBACK_S", str(LOOKBACK_S))
    instance = DagsterInstance.get()
    waiting, reexecuted, superseded, rerunning, abandoned = failed_runs(instance, 5)
    [child] = started_runs(
        instance, 1, {ROOT_RUN_ID_TAG: reexecuted, PARENT_RUN_ID_TAG: reexecuted}
    )
    _succeed(instance, child.run_id)
    [later] = started_runs(instance, 1, {ROOT_RUN_ID_TAG: superseded})
    _succeed(instance, later.run_id)
    started_runs(instance, 1, {ROOT_RUN_ID_TAG: rerunning})
    _wait_past_lookback(instance, [waiting, reexecuted, superseded, rerunning, abandoned])
    assert orbit("cancel", abandoned).returncode == 0
    shown = json.loads(orbit("check-interrupted", "--json").stdout)
    assert [g["root_run_id"] for g in shown["interrupted"]] == [waiting]
    assert shown["before_lookback_scan"] == {"failures_scanned": 5, "complete": True}


def test_the_scan_before_the_lookback_pages_and_stops_at_its_bound(
    dagster_home: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of two (the page size made small): five old failures are all found, newest
    first, and a bound of three says the scan is incomplete."""
    monkeypatch.setattr(detect, "LISTING_PAGE", 2)
    settings = RecoverySettings(failed_lookback_s=LOOKBACK_S)
    instance = DagsterInstance.get()
    ids = failed_runs(instance, 5)
    _wait_past_lookback(instance, ids)
    with engine.connect() as conn:
        every = detect.detect_failed_before_lookback(instance, conn, settings)
        bounded = detect.detect_failed_before_lookback(instance, conn, settings, max_events=3)
        exact = detect.detect_failed_before_lookback(instance, conn, settings, max_events=5)
    assert [c.run_id for c in every.candidates] == ids[::-1]
    assert (every.scanned, every.complete) == (5, True)
    assert [c.run_id for c in bounded.candidates] == ids[::-1][:3]
    assert (bounded.scanned, bounded.complete) == (3, False)
    assert (exact.scanned, exact.complete) == (5, True)


def test_the_sensor_tick_does_not_scan_before_the_lookback(
    dagster_home: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second scan is the listing's: a sensor pass never reads older failures."""
    instance = DagsterInstance.get()
    ids = failed_runs(instance, 2)
    _wait_past_lookback(instance, ids)

    def refused(*_args: object, **_kwargs: object) -> detect.FailurePage:
        raise AssertionError("the sensor read failures before its lookback")

    monkeypatch.setattr(detect, "failure_page_before", refused)
    monkeypatch.setattr(detect, "detect_failed_before_lookback", refused)
    settings = RecoverySettings(failed_lookback_s=LOOKBACK_S)
    assert run_cycle(instance, engine, settings, decided_by="sensor") == []
