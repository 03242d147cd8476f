"""The CLI contract: --json everywhere it is offered (errors included), exit codes as the
README says (0 ok, 1 needs a person, 2 usage), and no traceback for a config error."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from dagster import ConfigurableResource, EnvVar, job, op
from dagster._core.execution.api import create_execution_plan

from orbit_pipelines.cli.failures import as_orbit_error
from orbit_pipelines_tests.cli.conftest import CliResult
from orbit_pipelines_tests.cli.jobs import timeout_job
from orbit_pipelines_tests.cli.test_runs_cli import _failed_run


def test_an_unknown_run_under_json_is_a_json_error_with_exit_2(
    dagster_home: Path, orbit_cli: Callable[..., CliResult]
) -> None:
    for command in (("status", "no-such-run"), ("effects", "no-such-run")):
        result = orbit_cli(*command, "--json")
        assert result.returncode == 2, command
        payload = json.loads(result.stdout)
        assert payload["error"]["code"] == "E-1010"
        assert "no-such-run" in payload["error"]["message"]
        assert payload["exit_code"] == 2
        assert payload["database"].startswith("postgresql")
        assert payload["embedded"] is False


def test_a_usage_error_under_json_is_json_too(
    dagster_home: Path, orbit_cli: Callable[..., CliResult]
) -> None:
    result = orbit_cli("status", "--json")  # RUN_ID missing
    assert result.returncode == 2
    payload = json.loads(result.stdout)
    assert payload["error"]["code"] == "usage" and "run_id" in payload["error"]["message"]
    bad_max = orbit_cli("recover", "--auto-resume", "--max", "0", "--json")
    assert bad_max.returncode == 2
    assert json.loads(bad_max.stdout)["error"]["message"] == "--max must be at least 1"


def test_recover_json_prints_json_when_only_planning(
    dagster_home: Path, orbit_cli: Callable[..., CliResult]
) -> None:
    run_id = _failed_run(timeout_job)
    result = orbit_cli("recover", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["acted"] is False
    (group,) = payload["interrupted"]
    assert group["latest_run_id"] == run_id
    assert "re-executes it from failure" in group["plan"]


class NeedsSecret(ConfigurableResource):  # type: ignore[misc]
    token: str


@op
def uses_secret(needs: NeedsSecret) -> None:
    """Never runs: config resolution fails first."""


@job(resource_defs={"needs": NeedsSecret(token=EnvVar("ORBIT_TEST_UNSET_TOKEN"))})
def secret_job() -> None:
    uses_secret()


def test_an_unset_environment_variable_is_e2008_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ORBIT_TEST_UNSET_TOKEN", raising=False)
    # The real error Dagster raises when a re-execution plan resolves the resource config
    # (what `orbit resume` hit as a traceback).
    with pytest.raises(Exception) as caught:
        create_execution_plan(secret_job, run_config={})
    error = as_orbit_error(caught.value)
    assert error.code == "E-2008"
    assert "ORBIT_TEST_UNSET_TOKEN" in error.message
    assert "Traceback" not in error.render()
