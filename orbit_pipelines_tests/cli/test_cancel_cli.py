"""`orbit cancel`: a finished group is not abandoned by accident, and abandoning is undoable."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from dagster import DagsterInstance, execute_job, reconstructable
from sqlalchemy import Engine

from orbit_pipelines.store.recoveries import group_control
from orbit_pipelines_tests.cli.conftest import CliResult
from orbit_pipelines_tests.cli.jobs import bad_input_job, fine_job
from orbit_pipelines_tests.cli.test_runs_cli import _failed_run


def _abandoned(engine: Engine, root: str) -> bool:
    with engine.connect() as conn:
        control = group_control(conn, root)
    return control is not None and control.abandoned_at is not None


def test_cancel_of_a_succeeded_group_needs_yes_and_undo_reverses_it(
    dagster_home: Path, engine: Engine, orbit_cli: Callable[..., CliResult]
) -> None:
    with DagsterInstance.get() as instance:
        ok = execute_job(reconstructable(fine_job), instance=instance)
    refused = orbit_cli("cancel", ok.run_id)
    assert refused.returncode == 1
    assert "E-1012" in refused.stderr and "already succeeded" in refused.stderr
    assert not _abandoned(engine, ok.run_id)

    done = orbit_cli("cancel", ok.run_id, "--yes", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["abandoned"] is True
    assert _abandoned(engine, ok.run_id)

    undone = orbit_cli("cancel", ok.run_id, "--undo")
    assert undone.returncode == 0, undone.stderr
    assert "no longer abandoned" in undone.stdout
    assert not _abandoned(engine, ok.run_id)

    again = orbit_cli("cancel", ok.run_id, "--undo", "--json")
    assert again.returncode == 1
    assert json.loads(again.stdout)["error"]["code"] == "E-1011"


def test_cancel_of_a_failed_group_abandons_it_and_undo_brings_it_back(
    dagster_home: Path, engine: Engine, orbit_cli: Callable[..., CliResult]
) -> None:
    run_id = _failed_run(bad_input_job)
    result = orbit_cli("cancel", run_id)
    assert result.returncode == 0, result.stderr
    assert f"undo: orbit cancel {run_id} --undo" in result.stdout
    assert _abandoned(engine, run_id)
    assert json.loads(orbit_cli("check-interrupted", "--json").stdout)["interrupted"] == []
    assert orbit_cli("cancel", run_id, "--undo").returncode == 0
    groups = json.loads(orbit_cli("check-interrupted", "--json").stdout)["interrupted"]
    assert [g["root_run_id"] for g in groups] == [run_id]
