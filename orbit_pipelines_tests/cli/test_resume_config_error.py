"""`orbit resume` of a run whose resource needs an environment variable that is not set:
one E-2008 line naming the variable, never Dagster's DagsterInvalidConfigError traceback.

(The example carrier no longer needs a variable: without ORBIT_CARRIER_URL it is the local
carrier. The resource here is one that does.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine

from orbit_pipelines_tests.cli.conftest import CliResult
from orbit_pipelines_tests.cli.doubt_location import SECRET_SERVICE_ENV
from orbit_pipelines_tests.processes import ChildProcesses
from orbit_pipelines_tests.sensors.harness import REPO_ROOT, Harness


@pytest.mark.e2e  # `dagster job launch` in a subprocess
def test_resume_with_an_unset_variable_is_e2008_naming_it(
    dagster_home: Path,
    db_url: str,
    engine: Engine,
    children: ChildProcesses,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    orbit_cli: Callable[..., CliResult],
) -> None:
    harness = Harness(
        home=dagster_home, db_url=db_url, engine=engine, children=children, tmp=tmp_path
    )
    harness.workspace.write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: orbit_pipelines_tests.cli.doubt_location\n"
        "      location_name: orbit_doubt\n"
        f"      working_directory: {REPO_ROOT}\n"
    )
    # A real run launched through the code location (so it has an origin to re-execute
    # from); no daemon, so it stays queued until we fail it, as a crash would.
    monkeypatch.setenv(SECRET_SERVICE_ENV, "http://127.0.0.1:9")
    run_id = harness.launch_job("secret_job", {})
    run = harness.instance.get_run_by_id(run_id)
    assert run is not None
    harness.instance.report_run_failed(run, "failed for the test")

    monkeypatch.delenv(SECRET_SERVICE_ENV)
    result = orbit_cli("resume", run_id)
    assert result.returncode == 1
    assert f"error: E-2008 environment variable {SECRET_SERVICE_ENV} is not set" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "DagsterInvalidConfigError" not in result.stderr

    as_json = orbit_cli("resume", run_id, "--json")
    # resume has no --json: a usage error, itself as JSON.
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["error"]["code"] == "usage"
