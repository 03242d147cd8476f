"""The orbit CLI against real runs interrupted by a real SIGKILL, with a real daemon."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from dagster import DagsterRunStatus

from orbit_pipelines.cli import main
from orbit_pipelines.store.recoveries import recoveries_for_group
from orbit_pipelines_tests.processes import wait_for
from orbit_pipelines_tests.sensors.harness import Harness

ROWS = 30
ENDED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


@dataclass
class Said:
    code: int
    out: str
    err: str


@pytest.fixture
def orbit(capsys: pytest.CaptureFixture[str]) -> Callable[..., Said]:
    """Run the CLI's main() in this process (DAGSTER_HOME and the URL come from the fixtures)."""

    def call(*args: str) -> Said:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Said(code, captured.out, captured.err)

    return call


def _interrupted(orbit: Callable[..., Said]) -> dict[str, dict[str, object]]:
    said = orbit("check-interrupted", "--json")
    return {g["root_run_id"]: g for g in json.loads(said.out)["interrupted"]}


@pytest.mark.e2e
def test_sigkilled_run_is_shown_then_resumed_by_a_person(
    harness: Harness, orbit: Callable[..., Said]
) -> None:
    """Automatic recovery is off for this job (tag): a person sees it and resumes it."""
    harness.start_daemon()
    run_id = harness.launch("manual_rows_job", {"rows": ROWS, "row_sleep_s": 0.2})
    _host, pid = harness.wait_rows(run_id, 5)
    os.kill(pid, signal.SIGKILL)

    groups = wait_for(
        lambda: _interrupted(orbit).get(run_id), timeout_s=120, what="the run listed as interrupted"
    )
    assert groups["job_name"] == "manual_rows_job"  # type: ignore[index]
    assert "off for this job" in str(groups["plan"])  # type: ignore[index]
    text = orbit("check-interrupted").out
    assert "Job 'manual_rows_job' was interrupted at row" in text
    assert f"orbit resume {run_id}" in text

    status = orbit("status", run_id, "--json")
    steps = {s["step_key"]: s for s in json.loads(status.out)["steps"]}
    assert steps["prepare"]["status"] == "SUCCESS"
    assert 5 <= steps["process_rows"]["rows_done"] < ROWS

    harness.wait_status(run_id, (DagsterRunStatus.FAILURE,), timeout_s=120)
    resumed = orbit("resume", run_id)
    assert resumed.code == 0, resumed.err
    assert "launched" in resumed.out
    (child,) = harness.children_of(run_id)
    assert harness.wait_status(child.run_id, ENDED).status == DagsterRunStatus.SUCCESS
    assert harness.effects_per_row(run_id) == dict.fromkeys(range(ROWS), 1)
    history = json.loads(orbit("status", run_id, "--json").out)["recoveries"]
    assert [(r["decided_by"], r["reason"]) for r in history] == [("cli", "manual")]
    assert run_id not in _interrupted(orbit)


@pytest.mark.e2e
def test_resume_racing_the_sensor_launches_once(
    harness: Harness, orbit: Callable[..., Said]
) -> None:
    harness.start_daemon()
    run_id = harness.launch("rows_job", {"rows": ROWS, "row_sleep_s": 0.2})
    _host, pid = harness.wait_rows(run_id, 5)
    os.kill(pid, signal.SIGKILL)
    harness.wait_status(run_id, (DagsterRunStatus.FAILURE,), timeout_s=120)
    # The sensor (2 s interval) is about to act too; whoever inserts the recoveries row first
    # launches, the other is told so. Both answers exit 0.
    said = orbit("resume", run_id)
    assert said.code == 0, said.err
    assert "launched" in said.out or "already has a recovery" in said.out
    child = harness.wait_child(run_id)
    assert harness.wait_status(child.run_id, ENDED).status == DagsterRunStatus.SUCCESS
    assert len(harness.children_of(run_id)) == 1
    with harness.engine.connect() as conn:
        assert len(recoveries_for_group(conn, run_id)) == 1
    assert harness.effects_per_row(run_id) == dict.fromkeys(range(ROWS), 1)


@pytest.mark.e2e
def test_resume_of_a_group_whose_recovery_is_queued_says_so_and_exits_0(
    harness: Harness, orbit: Callable[..., Said]
) -> None:
    """CI found this race (stop 17): the sensor's recovery was QUEUED when a person resumed.

    Stopping the daemon keeps the recovery QUEUED, so the second resume meets it every time.
    """
    daemon = harness.start_daemon()
    run_id = harness.launch("manual_rows_job", {"rows": ROWS, "row_sleep_s": 0.2})
    _host, pid = harness.wait_rows(run_id, 5)
    os.kill(pid, signal.SIGKILL)
    harness.wait_status(run_id, (DagsterRunStatus.FAILURE,), timeout_s=120)
    harness.children.stop(daemon)

    first = orbit("resume", run_id)
    assert first.code == 0, first.err
    assert "launched" in first.out
    (child,) = harness.children_of(run_id)
    assert child.status == DagsterRunStatus.QUEUED

    again = orbit("resume", run_id)
    assert again.code == 0, again.err
    assert f"already has a recovery (run {child.run_id} is QUEUED, decided by cli)" in again.out
    assert len(harness.children_of(run_id)) == 1

    harness.start_daemon()
    assert harness.wait_status(child.run_id, ENDED).status == DagsterRunStatus.SUCCESS
    assert harness.effects_per_row(run_id) == dict.fromkeys(range(ROWS), 1)
