"""run_rows in real Dagster runs on a Postgres instance: progress lines, counts metadata,
a coded step failure, and a re-execution that resumes at the failed row."""

from __future__ import annotations

from pathlib import Path

from dagster import (
    DagsterEventType,
    DagsterInstance,
    ReexecutionOptions,
    execute_job,
    reconstructable,
)

from orbit_pipelines_tests.dagster_io.row_step_jobs import ROWS, charge_orders


def run_config(reject_id: int) -> dict:
    return {"ops": {"charge": {"config": {"reject_id": reject_id}}}}


def messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.user_message]


def output_metadata(instance: DagsterInstance, run_id: str) -> dict:
    (event,) = instance.all_logs(run_id, of_type=DagsterEventType.STEP_OUTPUT)
    assert event.dagster_event is not None
    return {k: v.value for k, v in event.dagster_event.step_output_data.metadata.items()}


def test_failed_row_step_resumes_in_a_reexecution(dagster_home: Path) -> None:
    job = reconstructable(charge_orders)
    with DagsterInstance.get() as instance:
        first = execute_job(job, instance, run_config=run_config(reject_id=42))
        assert not first.success
        failure = next(
            e for e in instance.all_logs(first.run_id, of_type=DagsterEventType.STEP_FAILURE)
        )
        assert failure.dagster_event is not None
        error = failure.dagster_event.step_failure_data.error
        assert (
            error is not None and "E-1003 row 42: order 42 has a negative amount" in error.message
        )
        logs = messages(instance, first.run_id)
        assert "row 40/100 (40%)" in logs

        # The input is fixed (the config no longer rejects) and the run re-executed from failure.
        second = execute_job(
            job,
            instance,
            run_config=run_config(reject_id=-1),
            reexecution_options=ReexecutionOptions.from_failure(first.run_id, instance),
        )
        assert second.success
        metadata = output_metadata(instance, second.run_id)
        assert metadata["rows_done"] == ROWS - 42  # rows 42..99
        assert metadata["rows_skipped_already_done"] == 42
        assert metadata["rows_quarantined"] == 0 and metadata["rows_failed"] == 0
        assert metadata["aggregations"] == {"total": sum(range(ROWS))}
        logs = messages(instance, second.run_id)
        assert "rows finished: row 100/100 (100%), 42 already done" in logs
        assert sum(1 for m in logs if m.startswith("row ")) >= 10  # every ~5%
