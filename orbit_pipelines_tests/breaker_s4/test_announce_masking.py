"""Breaker (session 4): a password in a run's failure must not reach Dagster's event log or
the ``orbit/decision`` tag in any form a driver, a subprocess or user code may quote it.
Real Dagster instance on Postgres; the hold is announced by a real recovery pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance

from orbit_pipelines.recovery.announce import PREFIX
from orbit_pipelines.recovery.cycle import run_cycle
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.urls import mask_secrets
from orbit_pipelines.tags import DECISION_TAG
from orbit_pipelines_tests.recovery.many_runs import failed_runs

HOLD_ALL = RecoverySettings(max_attempts=0)
SECRET = "s3cr3tPW"

# Each form was seen to pass mask_secrets unchanged (found by feeding it these strings).
LEAKED_FORMS = [
    # subprocess.CalledProcessError of a shell command: "Command '...' returned non-zero"
    f"Command 'PGPASSWORD={SECRET} pg_dump -h db orbit' returned non-zero exit status 1.",
    f"env ORBIT_DB_PASSWORD={SECRET} failed",
    # repr of a config dict / JSON body quoted by user code or a client library
    f"bad connect args {{'user': 'etl', 'password': '{SECRET}'}}",
    f'request failed: {{"password": "{SECRET}", "user": "etl"}}',
    # libpq keyword string with a double-quoted value
    f'host=db user=etl password="{SECRET} x" dbname=orbit',
]

ALREADY_MASKED = [
    f"postgresql://etl:{SECRET}@db:5432/orbit",
    f"postgresql+psycopg2://etl:{SECRET}@db/orbit?sslmode=require",
    f"redis://:{SECRET}@localhost:6379/0",
    f"amqp://guest:{SECRET}@localhost:5672//",
    f"postgresql://etl@db/orbit?password={SECRET}",
    f"host=db user=etl password={SECRET} dbname=orbit",
    f"postgresql://etl:{SECRET}@[::1]:5432/orbit",
]


@pytest.mark.parametrize("text", LEAKED_FORMS + ALREADY_MASKED)
def test_mask_secrets_masks_every_form(text: str) -> None:
    assert SECRET not in mask_secrets(text)


def test_mask_secrets_leaves_plain_words_alone() -> None:
    plain = 'password authentication failed for user "etl"; check the token'
    assert mask_secrets(plain) == plain


def _shown(instance: DagsterInstance, run_id: str) -> str:
    parts: list[str] = []
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        if event is None or not (event.message or "").startswith(PREFIX):
            continue
        parts.append(event.message or "")
        metadata = event.engine_event_data.metadata or {}
        parts += [str(getattr(v, "value", v)) for v in metadata.values()]
    run = instance.get_run_by_id(run_id)
    assert run is not None
    parts.append(run.tags.get(DECISION_TAG, ""))
    return "\n".join(parts)


def test_a_hold_announces_no_password_in_any_form(dagster_home: Path, engine: object) -> None:
    instance = DagsterInstance.get()
    ids = {text: failed_runs(instance, 1, message=text)[0] for text in LEAKED_FORMS}
    run_cycle(instance, engine, HOLD_ALL, decided_by="sensor:orbit_recovery")  # type: ignore[arg-type]
    for text, run_id in ids.items():
        shown = _shown(instance, run_id)
        assert "holds it" in shown, text
        assert SECRET not in shown, text
