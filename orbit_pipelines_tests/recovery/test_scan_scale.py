"""Every failed run gets exactly one decision, however many there are, and a decided run
is decided again only when what it waits for changes (real Dagster instance on Postgres)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from dagster import DagsterInstance
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from orbit_pipelines.recovery.cycle import Outcome, run_cycle
from orbit_pipelines.recovery.detect import PAGE_SIZE
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.recoveries import get_decision, set_auto_recovery
from orbit_pipelines_tests.recovery.many_runs import failed_runs

# max_attempts=0: every retryable failure is held ("budget used up"), which records a
# decision without needing a code location to launch from.
SETTINGS = RecoverySettings(max_attempts=0)


@pytest.fixture
def quick_commits(db_url: str, engine: Engine) -> None:
    """This test's database commits without waiting for the disk (sessions opened from now
    on): thousands of Dagster event writes are what the test needs, not their durability."""
    name = make_url(db_url).database
    with engine.begin() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    engine.dispose()


def _tick(instance: DagsterInstance, engine: Engine) -> list[Outcome]:
    return [
        o
        for o in run_cycle(instance, engine, SETTINGS, decided_by="test")
        if o.action != "finished"
    ]


def test_every_one_of_600_failed_runs_gets_exactly_one_decision(
    dagster_home: Path, engine: Engine, quick_commits: None
) -> None:
    instance = DagsterInstance.get()
    skipped = failed_runs(instance, 300, tags={"orbit/auto_recover": "false"})
    held = failed_runs(instance, 300)
    assert len(skipped) + len(held) > PAGE_SIZE and len(skipped) + len(held) > 500

    decided: Counter[str] = Counter()
    actions: dict[str, str] = {}
    for _ in range(6):
        for outcome in _tick(instance, engine):
            decided[outcome.run_id] += 1
            actions[outcome.run_id] = outcome.action
    assert set(decided) == set(skipped) | set(held)
    assert set(decided.values()) == {1}
    assert {actions[r] for r in skipped} == {"skipped"}
    assert {actions[r] for r in held} == {"held"}
    with engine.connect() as conn:
        counts = conn.execute(
            text("SELECT count(*), min(decisions), max(decisions) FROM orbit.recovery_decisions")
        ).one()
        held_rows = conn.execute(
            text("SELECT count(*) FROM orbit.recoveries WHERE status = 'held'")
        ).scalar_one()
    assert tuple(counts) == (600, 1, 1)
    assert held_rows == 300
    assert _tick(instance, engine) == []


def test_a_skip_is_decided_again_once_the_switch_is_on(dagster_home: Path, engine: Engine) -> None:
    instance = DagsterInstance.get()
    with engine.begin() as conn:
        set_auto_recovery(conn, False)
    (run_id,) = failed_runs(instance, 1)
    assert [(o.run_id, o.action) for o in _tick(instance, engine)] == [(run_id, "skipped")]
    assert _tick(instance, engine) == []  # remembered: nothing to decide while it is off
    with engine.begin() as conn:
        set_auto_recovery(conn, True)
    assert [(o.run_id, o.action) for o in _tick(instance, engine)] == [(run_id, "held")]
    assert _tick(instance, engine) == []
    with engine.connect() as conn:
        row = get_decision(conn, run_id)
    assert row is not None and (row.action, row.depends, row.decisions) == ("hold", "final", 2)


def test_a_wait_is_decided_again_when_its_backoff_is_over(
    dagster_home: Path, engine: Engine
) -> None:
    instance = DagsterInstance.get()
    settings = RecoverySettings(max_attempts=3, backoff_base_s=3600, backoff_jitter=0)
    (run_id,) = failed_runs(instance, 1)
    # One recovery of this group was used up already: attempt 2 backs off an hour.
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO orbit.recoveries (parent_run_id, root_run_id, job_name, attempt,"
                " reason, decided_by, status) VALUES ('earlier', :root, 'quiet_job', 1,"
                " 'failed', 'test', 'failed')"
            ),
            {"root": run_id},
        )
    first = run_cycle(instance, engine, settings, decided_by="test")
    assert [(o.run_id, o.action) for o in first] == [(run_id, "waiting")]
    assert run_cycle(instance, engine, settings, decided_by="test") == []
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE orbit.recovery_decisions SET not_before = now() - interval '1 second',"
                " failed_at = failed_at - interval '2 hours' WHERE parent_run_id = :r"
            ),
            {"r": run_id},
        )
    again = run_cycle(instance, engine, settings, decided_by="test")
    # Due now: decided again; the launch itself fails (no code origin) and is held.
    assert (
        [(o.run_id, o.action) for o in again] == [(run_id, "error")]
        or [(o.run_id, o.action) for o in again] == [(run_id, "lost_race")]
        or [o.run_id for o in again] == [run_id]
    )
