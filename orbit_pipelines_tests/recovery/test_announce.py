"""orbit's decisions reach Dagster's event log and run tags (real Dagster instance on
Postgres): a hold says why and what to do, "not recovering" is said once, and no password
gets there. The UI itself is checked by ``orbit_pipelines_tests/ui``."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance

from orbit_pipelines.errors import OrbitError
from orbit_pipelines.recovery.announce import PREFIX, launched_by_tags, readable_detail
from orbit_pipelines.recovery.cycle import run_cycle
from orbit_pipelines.recovery.launch import launch
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.tags import DECISION_TAG
from orbit_pipelines_tests.recovery.many_runs import failed_runs

# max_attempts=0: a retryable failure is held ("attempt budget used up") without a code
# location to launch from.
HOLD_ALL = RecoverySettings(max_attempts=0)


def _orbit_events(instance: DagsterInstance, run_id: str) -> list[tuple[str, dict[str, str]]]:
    found = []
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        if event is None or not (event.message or "").startswith(PREFIX):
            continue
        data = event.engine_event_data
        metadata = {k: str(getattr(v, "value", v)) for k, v in (data.metadata or {}).items()}
        found.append((event.message or "", metadata))
    return found


def test_a_hold_is_written_to_the_runs_event_log_with_what_to_do_and_tagged(
    dagster_home: Path, engine: object
) -> None:
    instance = DagsterInstance.get()
    [run_id] = failed_runs(
        instance, 1, message="could not reach postgresql://orbit:s3cret@db.internal:5432/orbit"
    )
    outcomes = run_cycle(instance, engine, HOLD_ALL, decided_by="sensor:orbit_recovery")  # type: ignore[arg-type]
    assert [o.action for o in outcomes if o.run_id == run_id] == ["held"]

    [(message, metadata)] = _orbit_events(instance, run_id)
    assert message.startswith(f"{PREFIX}: run {run_id} was failed (run failed")
    assert "The recovery sensor orbit_recovery holds it: attempt budget used up" in message
    assert f"What to do: find why every attempt failed, then `orbit resume {run_id}`" in message
    assert metadata["action"] == "held" and metadata["reason"] == "failed"
    assert metadata["decided_by"] == "sensor:orbit_recovery"
    run = instance.get_run_by_id(run_id)
    assert run is not None
    assert run.tags[DECISION_TAG].startswith("held (failed): attempt budget used up")
    # The failure quoted a URL with a password: masked in the event and the tag.
    shown = " ".join([message, *metadata.values(), run.tags[DECISION_TAG]])
    assert "s3cret" not in shown

    # Decided once: a second pass says nothing new.
    run_cycle(instance, engine, HOLD_ALL, decided_by="sensor:orbit_recovery")  # type: ignore[arg-type]
    assert len(_orbit_events(instance, run_id)) == 1


def test_not_recovering_is_said_once(dagster_home: Path, engine: object) -> None:
    instance = DagsterInstance.get()
    [run_id] = failed_runs(instance, 1, tags={"orbit/auto_recover": "false"})
    outcomes = run_cycle(instance, engine, HOLD_ALL, decided_by="cli")  # type: ignore[arg-type]
    assert [o.action for o in outcomes if o.run_id == run_id] == ["skipped"]
    [(message, metadata)] = _orbit_events(instance, run_id)
    assert "The orbit CLI does not recover it: automatic recovery is off" in message
    assert f"`orbit resume {run_id}` recovers it by hand" in message
    assert metadata["action"] == "not recovering"
    # The skip is remembered: later passes do not decide it, nor say it, again.
    run_cycle(instance, engine, HOLD_ALL, decided_by="cli")  # type: ignore[arg-type]
    assert len(_orbit_events(instance, run_id)) == 1


def test_launched_by_tags_take_the_tick_only_from_a_daemon_evaluation() -> None:
    daemon = launched_by_tags("orbit_recovery", ["repo", "orbit_recovery", "4711"])
    assert daemon == {"dagster/sensor_name": "orbit_recovery", "dagster/tick": "4711"}
    # build_sensor_context / a direct evaluation: a timestamp where the tick id would be.
    local = launched_by_tags("orbit_recovery", ["repo", "orbit_recovery", "20261201_140000"])
    assert local == {"dagster/sensor_name": "orbit_recovery"}
    assert launched_by_tags("s", None) == {"dagster/sensor_name": "s"}


def test_a_detail_is_shown_without_class_paths_or_dagsters_wrapper() -> None:
    wrapped = (
        "step process_rows failed: dagster._core.errors.DagsterExecutionStepExecutionError: "
        'Error occurred while executing op "process_rows":'
    )
    assert (
        readable_detail(wrapped, "E-1013")
        == "step process_rows failed: E-1013 (row key is missing)"
    )
    coded = "step ship failed: orbit_pipelines.errors.OrbitError: E-3001 UPS API timeout"
    assert readable_detail(coded, "E-3001") == "step ship failed: E-3001 UPS API timeout"
    dead = "worker process gone on vm: process_rows (pid 19542) | held: attempt budget used up"
    assert readable_detail(dead) == "worker process gone on vm: process_rows (pid 19542)"


def test_a_launch_that_fails_is_announced_as_a_hold_with_the_error(
    dagster_home: Path, engine: object
) -> None:
    instance = DagsterInstance.get()
    # A run in storage only: no code origin to re-launch from, so the launch itself fails.
    [run_id] = failed_runs(instance, 1)
    with pytest.raises(OrbitError):
        launch(instance, engine, run_id, decided_by="cli", reason="failed", detail="worker lost")  # type: ignore[arg-type]
    [(message, metadata)] = _orbit_events(instance, run_id)
    assert "The orbit CLI holds it: its recovery could not be launched: E-4010" in message
    assert f"What to do: fix what the error names, then `orbit resume {run_id}`" in message
    assert metadata["action"] == "held"
    run = instance.get_run_by_id(run_id)
    assert run is not None
    assert run.tags[DECISION_TAG].startswith("held (failed): its recovery could not be launched")
