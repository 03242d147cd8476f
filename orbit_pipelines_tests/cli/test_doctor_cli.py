"""`orbit doctor` finds each planted inconsistency (and says how to fix it); a clean
database has none of them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import DagsterInstance, execute_job, reconstructable
from sqlalchemy import Engine, insert, text, update

from orbit_pipelines.store.effect_ledger import record_effect
from orbit_pipelines.store.recoveries import claim_recovery
from orbit_pipelines.store.tables import heartbeats, recoveries, step_rows
from orbit_pipelines_tests.cli.conftest import CliResult
from orbit_pipelines_tests.cli.jobs import fine_job

PLANTED = {
    "rows_open_in_finished_group",
    "intent_without_outcome",
    "stale_launching_recovery",
    "heartbeat_of_finished_run",
    "schema_tables",
}


def _succeeded_run() -> str:
    with (
        DagsterInstance.get() as instance,
        execute_job(reconstructable(fine_job), instance=instance) as result,
    ):
        assert result.success
        return result.run_id


def _plant(engine: Engine, root: str) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(step_rows).values(
                root_run_id=root,
                step_key="fine",
                key_hash=uuid.uuid4(),
                row_key="r1",
                status="running",
                attempt=1,
                run_id=root,
                updated_at=now,
            )
        )
        record_effect(
            conn,
            effect_key="ship:o1",
            root_run_id=root,
            step_key="fine",
            row_key="r1",
            receiver="unsafe",
            status="intent",
            run_id=root,
        )
        claim_recovery(
            conn,
            parent_run_id="some-failed-run",
            root_run_id="some-failed-run",
            job_name="fine_job",
            attempt=1,
            reason="dead",
            detail="planted",
            decided_by="test",
        )
        conn.execute(
            update(recoveries)
            .where(recoveries.c.parent_run_id == "some-failed-run")
            .values(detected_at=now - timedelta(hours=1))
        )
        conn.execute(
            insert(heartbeats).values(
                run_id=root,
                step_key="fine",
                root_run_id=root,
                host="elsewhere",
                pid=4242,
                rows_done=1,
                started_at=now,
                progress_at=now,
                beat_at=now + timedelta(minutes=5),  # long after the run ended
            )
        )
        conn.execute(text("DROP TABLE orbit.aggregation_state"))


def test_doctor_finds_every_planted_inconsistency(
    dagster_home: Path, engine: Engine, orbit_cli: Callable[..., CliResult]
) -> None:
    root = _succeeded_run()
    clean = orbit_cli("doctor", "--json")
    found_clean = {p["check"] for p in json.loads(clean.stdout)["problems"]}
    assert not found_clean & PLANTED, found_clean
    assert json.loads(clean.stdout)["facts"]["schema_version"] >= 1

    _plant(engine, root)
    result = orbit_cli("doctor", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    by_check = {p["check"]: p for p in report["problems"]}
    assert set(by_check) >= PLANTED, report["problems"]
    assert all(p["fix"] for p in report["problems"])
    assert root in by_check["rows_open_in_finished_group"]["problem"]
    assert "aggregation_state" in by_check["schema_tables"]["problem"]
    assert "some-failed-run" in by_check["stale_launching_recovery"]["problem"]
    # No daemon runs in this test: the sensor cannot tick, and doctor says so.
    assert "daemon" in by_check

    text_out = orbit_cli("doctor")
    assert text_out.returncode == 1
    assert "[intent_without_outcome]" in text_out.stdout and "fix: " in text_out.stdout
