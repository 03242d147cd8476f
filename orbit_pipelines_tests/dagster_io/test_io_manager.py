"""Re-execution from failure with the checkpoint IO manager: real Dagster runs, real Postgres."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    EventRecordsFilter,
    JobDefinition,
    ReexecutionOptions,
    execute_job,
    reconstructable,
)
from sqlalchemy import Engine, select, text

from orbit_pipelines.store.tables import step_outputs
from orbit_pipelines_tests.dagster_io import jobs

FAIL_TRANSFORM_ONCE = {"ops": {"transform": {"config": {"fail_times": 1}}}}


@pytest.fixture
def instance(dagster_home: Path, engine: Engine) -> DagsterInstance:
    """A Postgres-backed instance on this test's database, with the call-count table."""
    with engine.begin() as conn:
        conn.execute(text(jobs.CALLS_DDL))
    return DagsterInstance.get()


def calls(engine: Engine, step: str) -> list[str]:
    """Run ids of every call of ``step``, in order."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT run_id FROM public.io_test_calls WHERE step = :s ORDER BY ctid"),
            {"s": step},
        )
        return [row[0] for row in rows]


def run(
    job: JobDefinition,
    instance: DagsterInstance,
    *,
    config: dict | None = None,
    parent: str | None = None,
) -> tuple[str, bool]:
    """Execute (or re-execute from the failure of ``parent``); return (run id, success)."""
    options = ReexecutionOptions.from_failure(parent, instance) if parent else None
    with execute_job(
        reconstructable(job), instance, run_config=config, reexecution_options=options
    ) as result:
        return result.run_id, result.success


def _started(instance: DagsterInstance, run_id: str) -> set[str]:
    """Step keys that started in a run (from Dagster's event log)."""
    records = instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.STEP_START), limit=1000
    )
    return {r.event_log_entry.step_key or "" for r in records if r.event_log_entry.run_id == run_id}


def test_reexecution_loads_extract_from_postgres_instead_of_recomputing(
    instance: DagsterInstance, engine: Engine
) -> None:
    first, ok = run(jobs.etl_job, instance, config=FAIL_TRANSFORM_ONCE)
    assert not ok
    assert calls(engine, "extract") == [first]

    second, ok = run(jobs.etl_job, instance, parent=first)

    assert ok
    assert calls(engine, "extract") == [first], "extract must not run again"
    assert calls(engine, "transform") == [first, second]
    assert calls(engine, "load") == [second]
    assert _started(instance, second) == {"transform", "load"}
    run_record = instance.get_run_by_id(second)
    assert run_record is not None and run_record.root_run_id == first

    with engine.connect() as conn:
        rows = conn.execute(
            select(step_outputs.c.run_id, step_outputs.c.step_key, step_outputs.c.root_run_id)
        ).all()
    assert sorted(rows) == sorted(
        [(first, "extract", first), (second, "transform", first), (second, "load", first)]
    )
    # load's output is what transform computed from extract's stored frame.
    assert _load_output(engine, second) == {"rows": 4, "total": 100, "carriers": 3}


def _load_output(engine: Engine, run_id: str) -> object:
    from orbit_pipelines.store.output_codecs import decode
    from orbit_pipelines.store.step_outputs import OutputKey, find_output, read_payload

    with engine.connect() as conn:
        stored = find_output(conn, OutputKey(run_id, "load", "result"))
    assert stored is not None
    return decode(stored.format, read_payload(engine, stored), allow_pickle=False)


def test_two_failed_reexecutions_still_load_extract_from_the_first_run(
    instance: DagsterInstance, engine: Engine
) -> None:
    config = {"ops": {"transform": {"config": {"fail_times": 2}}}}
    first, ok = run(jobs.etl_job, instance, config=config)
    assert not ok
    second, ok = run(jobs.etl_job, instance, parent=first)
    assert not ok
    third, ok = run(jobs.etl_job, instance, parent=second)

    assert ok
    assert calls(engine, "extract") == [first]
    assert calls(engine, "transform") == [first, second, third]
    assert _started(instance, third) == {"transform", "load"}
    with engine.connect() as conn:
        roots = set(conn.execute(select(step_outputs.c.root_run_id)).scalars())
    assert roots == {first}
    assert _load_output(engine, third) == {"rows": 4, "total": 100, "carriers": 3}


def test_changed_code_version_of_a_skipped_step_fails_loading_with_e4003(
    instance: DagsterInstance, engine: Engine
) -> None:
    first, ok = run(jobs.etl_job, instance, config=FAIL_TRANSFORM_ONCE)
    assert not ok

    second, ok = run(jobs.etl_job_v2, instance, parent=first)

    assert not ok
    assert calls(engine, "extract") == [first]
    message = _failure_message(instance, second, "transform")
    assert "E-4003" in message
    assert "step 'extract' changed" in message
    assert "code version 1 then, 2 now" in message
    assert f"orbit restart {first}" in message


def test_changed_config_of_a_skipped_step_fails_loading_with_e4003(
    instance: DagsterInstance, engine: Engine
) -> None:
    first, ok = run(jobs.dynamic_job, instance, config=_gate("b"))
    assert not ok
    changed = {"ops": {"work_shard": {"config": {"fail_shard": "x"}}}}

    second, ok = run(jobs.dynamic_job, instance, config=changed, parent=first)

    assert not ok
    message = _failure_message(instance, second, "merge")
    assert "E-4003" in message
    assert "config hash" in message


def _gate(shard: str) -> dict:
    return {"ops": {"work_shard": {"config": {"fail_shard": shard}}}}


def test_dynamic_outputs_reload_by_mapping_key(instance: DagsterInstance, engine: Engine) -> None:
    first, ok = run(jobs.dynamic_job, instance, config=_gate("b"))
    assert not ok

    second, ok = run(jobs.dynamic_job, instance, parent=first)

    assert ok
    assert calls(engine, "fan_out") == [first]
    assert _started(instance, second) == {"work_shard[b]", "merge"}
    with engine.connect() as conn:
        shards = conn.execute(
            select(step_outputs.c.run_id, step_outputs.c.step_key, step_outputs.c.mapping_key)
            .where(step_outputs.c.step_key.like("work_shard%"))
            .order_by(step_outputs.c.step_key)
        ).all()
    assert shards == [
        (first, "work_shard[a]", ""),
        (second, "work_shard[b]", ""),
        (first, "work_shard[c]", ""),
    ]
    with engine.connect() as conn:
        fan = conn.execute(
            select(step_outputs.c.mapping_key).where(step_outputs.c.step_key == "fan_out")
        ).scalars()
        assert sorted(fan) == ["a", "b", "c"]


def test_multiprocess_executor_passes_outputs_through_postgres(
    instance: DagsterInstance, engine: Engine
) -> None:
    first, ok = run(jobs.etl_job_multiprocess, instance, config=FAIL_TRANSFORM_ONCE)
    assert not ok
    second, ok = run(jobs.etl_job_multiprocess, instance, parent=first)

    assert ok
    assert calls(engine, "extract") == [first]
    assert calls(engine, "load") == [second]
    assert _load_output(engine, second) == {"rows": 4, "total": 100, "carriers": 3}


def test_output_metadata_shows_rows_bytes_and_location(
    instance: DagsterInstance, engine: Engine, db_url: str
) -> None:
    run_id, ok = run(jobs.etl_job, instance)
    assert ok
    records = instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.HANDLED_OUTPUT), limit=100
    )
    by_step = {
        r.event_log_entry.step_key: r.event_log_entry.dagster_event.event_specific_data.metadata  # type: ignore[union-attr]
        for r in records
        if r.event_log_entry.run_id == run_id
    }
    extract_meta = by_step["extract"]
    assert extract_meta["rows"].value == 4
    assert extract_meta["bytes"].value > 0
    assert "orbit.step_outputs" in extract_meta["stored_in"].value
    assert f"run {run_id}" in extract_meta["stored_in"].value
    assert "rows" not in by_step["load"]
    assert str(extract_meta["content_hash"].value).startswith("sha256:")


def test_values_pickle_can_only_store_need_the_job_to_opt_in(
    instance: DagsterInstance,
) -> None:
    refused, ok = run(jobs.no_pickle_job, instance)
    assert not ok
    message = _failure_message(instance, refused, "make_opaque")
    assert "E-2009" in message
    assert "allow_pickle" in message

    _, ok = run(jobs.pickle_job, instance)
    assert ok


def _failure_message(instance: DagsterInstance, run_id: str, step: str) -> str:
    dagster_run = instance.get_run_by_id(run_id)
    assert dagster_run is not None and dagster_run.status == DagsterRunStatus.FAILURE
    records = instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.STEP_FAILURE), limit=100
    )
    for record in records:
        entry = record.event_log_entry
        if entry.run_id == run_id and entry.step_key == step:
            error = entry.dagster_event.event_specific_data.error  # type: ignore[union-attr]
            text_ = error.to_string()
            return text_
    raise AssertionError(f"no failure of step {step} in run {run_id}")


def test_frames_round_trip_through_a_real_run(instance: DagsterInstance, engine: Engine) -> None:
    run_id, ok = run(jobs.etl_job, instance)
    assert ok
    from orbit_pipelines.store.output_codecs import decode
    from orbit_pipelines.store.step_outputs import OutputKey, find_output, read_payload

    with engine.connect() as conn:
        stored = find_output(conn, OutputKey(run_id, "extract", "result"))
    assert stored is not None and stored.format == "parquet" and stored.row_count == 4
    frame = decode(stored.format, read_payload(engine, stored), allow_pickle=False)
    pd.testing.assert_frame_equal(frame, jobs.sample_frame())
