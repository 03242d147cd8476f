"""The run commands against real Dagster runs (failed by real errors) and a real Postgres.

Runs here are executed in-process with `execute_job` on the test's Postgres-backed instance;
the SIGKILL and racing cases, which need the daemon, live with the recovery end-to-end tests.
Most calls go through `main()` in this process (the same code the console script runs,
without paying Dagster's import time per call); the database-down and usage cases run the
real `python -m orbit_pipelines.cli` process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance, execute_job, reconstructable

from orbit_pipelines.cli import main
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.recoveries import group_control
from orbit_pipelines_tests.cli.jobs import bad_input_job, fine_job, timeout_job


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def orbit(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    def call(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return call


def orbit_process(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orbit_pipelines.cli", *args],
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def _failed_run(job: object) -> str:
    with DagsterInstance.get() as instance:
        result = execute_job(reconstructable(job), instance=instance)  # type: ignore[arg-type]
        assert not result.success
        return result.run_id


def test_input_error_is_shown_as_held_for_a_person(
    dagster_home: Path, orbit: Callable[..., Result]
) -> None:
    run_id = _failed_run(bad_input_job)

    text = orbit("check-interrupted")
    assert text.returncode == 1, text.stderr  # needs a person
    assert "Job 'bad_input_job' was interrupted" in text.stdout
    assert "Last error: E-1003" in text.stdout
    assert "held for a person" in text.stdout
    assert f"orbit resume {run_id}" in text.stdout

    as_json = orbit("check-interrupted", "--json")
    groups = json.loads(as_json.stdout)["interrupted"]
    assert [g["root_run_id"] for g in groups] == [run_id]
    assert groups[0]["last_error"]["code"] == "E-1003"
    assert groups[0]["needs_person"] is True
    assert groups[0]["steps_done"] == 1 and groups[0]["steps_failed"] == 1
    assert groups[0]["next_step"] == "reject_input"


def test_retryable_failure_says_the_sensor_will_retry(
    dagster_home: Path, orbit: Callable[..., Result]
) -> None:
    run_id = _failed_run(timeout_job)
    result = orbit("check-interrupted", "--json")
    assert result.returncode == 0, result.stderr  # the sensor handles it; nobody needed
    (group,) = json.loads(result.stdout)["interrupted"]
    assert group["latest_run_id"] == run_id
    assert group["last_error"]["code"] == "E-3001"
    assert "re-executes it from failure" in group["plan"]


def test_status_shows_steps_and_json(dagster_home: Path, orbit: Callable[..., Result]) -> None:
    run_id = _failed_run(bad_input_job)
    text = orbit("status", run_id)
    assert "Job 'bad_input_job'" in text.stdout
    assert "load_rows" in text.stdout and "SUCCESS" in text.stdout
    assert "reject_input" in text.stdout and "FAILURE" in text.stdout
    data = json.loads(orbit("status", run_id, "--json").stdout)
    assert {s["step_key"]: s["status"] for s in data["steps"]} == {
        "load_rows": "SUCCESS",
        "reject_input": "FAILURE",
    }
    assert data["recoveries"] == []


def test_restart_without_yes_changes_nothing(
    dagster_home: Path, db_url: str, orbit: Callable[..., Result]
) -> None:
    run_id = _failed_run(bad_input_job)
    with DagsterInstance.get() as instance:
        runs_before = len(instance.get_runs())
    result = orbit("restart", run_id)
    assert result.returncode == 1
    assert "side effects already happened" in result.stdout
    assert "E-1012 restart not confirmed; nothing changed" in result.stderr
    with DagsterInstance.get() as instance:
        assert len(instance.get_runs()) == runs_before
    engine = create_store_engine(db_url)
    with engine.connect() as conn:
        assert group_control(conn, run_id) is None  # not abandoned either
    engine.dispose()


def test_unknown_run_and_finished_run_get_one_clear_line(
    dagster_home: Path, orbit: Callable[..., Result]
) -> None:
    for command in ("status", "resume", "restart", "cancel"):
        result = orbit(command, "no-such-run")
        assert result.returncode == 2, command  # a usage error: the id names no run
        assert "\nerror: E-1010 no run with id no-such-run" in result.stderr, command
        assert "Traceback" not in result.stderr
    with DagsterInstance.get() as instance:
        ok = execute_job(reconstructable(fine_job), instance=instance)
    result = orbit("resume", ok.run_id)
    assert result.returncode == 1
    assert "E-1011" in result.stderr and "SUCCESS" in result.stderr
    assert "Traceback" not in result.stderr


def test_database_down_is_one_clear_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = orbit_process(
        "check-interrupted",
        env={
            "ORBIT_POSTGRES_URL": f"postgresql://etl:hunter2@127.0.0.1:{port}/orbit",
            "ORBIT_CONNECT_RETRY_SECONDS": "1",
        },
    )
    assert result.returncode == 1
    assert result.stderr.startswith("orbit: database postgresql://etl:***@127.0.0.1:")
    assert "\nerror: E-2001 cannot connect to Postgres at 127.0.0.1" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_usage_error_exits_2() -> None:
    assert orbit_process("status").returncode == 2
