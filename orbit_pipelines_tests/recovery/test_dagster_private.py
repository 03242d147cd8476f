"""Fails loudly when a Dagster upgrade moves or reshapes a private name recovery uses."""

from __future__ import annotations

import inspect

from orbit_pipelines.recovery import dagster_private as dp


def test_private_names_import_and_keep_their_shape() -> None:
    assert dp.RESUME_RETRY_TAG == "dagster/is_resume_retry"
    assert "dagster/is_resume_retry" in dp.TAGS_TO_MAYBE_OMIT_ON_RETRY
    resume = inspect.signature(dp.KnownExecutionState.build_resume_retry_reexecution)
    assert list(resume.parameters) == ["instance", "parent_run"]
    plan = inspect.signature(dp.create_execution_plan)
    for name in ("job", "run_config", "step_keys_to_execute", "known_state", "tags"):
        assert name in plan.parameters, name
    assert list(inspect.signature(dp.recon_job_from_origin).parameters) == ["origin"]
    for_reexecution = inspect.signature(dp.KnownExecutionState.build_for_reexecution)
    assert list(for_reexecution.parameters) == ["instance", "parent_run"]
    assert "dynamic_mappings" in dp.KnownExecutionState._fields
    assert "execution_plan_snapshot" in inspect.signature(dp.RemoteExecutionPlan).parameters
    assert callable(dp.RemoteExecutionPlan.execution_deps)


def test_public_instance_methods_used_by_launch_exist() -> None:
    from dagster import DagsterInstance

    create = inspect.signature(DagsterInstance.create_run_for_job)
    for name in ("run_id", "root_run_id", "parent_run_id", "remote_job_origin", "job_code_origin"):
        assert name in create.parameters, name
    assert "workspace" in inspect.signature(DagsterInstance.submit_run).parameters
    assert "message" in inspect.signature(DagsterInstance.report_run_failed).parameters
