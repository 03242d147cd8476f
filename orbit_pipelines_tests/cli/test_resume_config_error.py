"""`orbit resume` of a run whose resource needs an environment variable that is not set:
one E-2008 line naming the variable, never Dagster's DagsterInvalidConfigError traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import DagsterInstance

from orbit_examples.carrier.resource import CARRIER_TOKEN_ENV, CARRIER_URL_ENV
from orbit_examples.pipelines.sample_data import write_orders_csv
from orbit_pipelines_tests.cli.conftest import CliResult
from orbit_pipelines_tests.pipelines.conftest import location  # noqa: F401
from orbit_pipelines_tests.pipelines.location_harness import LocationHarness
from orbit_pipelines_tests.pipelines.test_shipments import config


@pytest.mark.e2e  # `dagster job launch` in a subprocess
def test_resume_with_an_unset_variable_is_e2008_naming_it(
    location: LocationHarness,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    orbit_cli: Callable[..., CliResult],
) -> None:
    # A real run launched through the code location (so it has an origin to re-execute
    # from); no daemon, so it stays queued until we fail it, as a crash would.
    monkeypatch.setenv(CARRIER_URL_ENV, "http://127.0.0.1:9")
    monkeypatch.setenv(CARRIER_TOKEN_ENV, "unused")
    run_id = location.launch_job("shipments", config(write_orders_csv(tmp_path / "o.csv", 3)))
    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        instance.report_run_failed(run, "failed for the test")

    monkeypatch.delenv(CARRIER_URL_ENV)
    result = orbit_cli("resume", run_id)
    assert result.returncode == 1
    assert "error: E-2008 environment variable ORBIT_CARRIER_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "DagsterInvalidConfigError" not in result.stderr

    as_json = orbit_cli("resume", run_id, "--json")
    # resume has no --json: a usage error, itself as JSON.
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["error"]["code"] == "usage"
