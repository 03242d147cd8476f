"""Breaker (session 4): releasing a hold for side effects in doubt (``release_effect_holds``)
cannot let a recovery launch while an effect of the group is in doubt, and two releasers
at once release a hold once. Real Dagster instance and orbit store on Postgres."""

from __future__ import annotations

import threading
from pathlib import Path

from dagster import DagsterInstance
from sqlalchemy import Engine, text

from orbit_pipelines.recovery.cycle import run_cycle
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.effect_ledger import record_effect, resolve_effect
from orbit_pipelines.store.recoveries import (
    EFFECTS_HOLD_MARK,
    get_recovery,
    release_effect_holds,
)
from orbit_pipelines_tests.recovery.many_runs import failed_runs

SETTINGS = RecoverySettings(backoff_base_s=0.0, backoff_max_s=0.0)


def _intent(engine: Engine, key: str, root: str) -> None:
    with engine.begin() as conn:
        record_effect(
            conn,
            effect_key=key,
            root_run_id=root,
            step_key="send",
            row_key=key,
            receiver="unsafe",
            status="intent",
        )


def _held_for_effects(instance: DagsterInstance, engine: Engine, key: str) -> str:
    [run_id] = failed_runs(instance, 1)
    _intent(engine, key, run_id)
    outcomes = run_cycle(instance, engine, SETTINGS, decided_by="sensor:test")
    assert [o.action for o in outcomes if o.run_id == run_id] == ["held"]
    with engine.connect() as conn:
        held = get_recovery(conn, run_id)
    assert held is not None and held.status == "held" and EFFECTS_HOLD_MARK in held.detail
    return run_id


def test_an_effect_in_doubt_after_the_release_holds_the_group_again(
    dagster_home: Path, engine: Engine
) -> None:
    """The release only makes the decision due; the policy reads the effects again when it
    decides, so an effect that went in doubt after the release (or between the release's
    read and its DELETE, which the DELETE's own snapshot may not see) holds again."""
    instance = DagsterInstance.get()
    # The mark itself in a key: the hold lists keys, the release must not be fooled by it.
    key = f"k1{EFFECTS_HOLD_MARK}x"
    run_id = _held_for_effects(instance, engine, key)
    with engine.begin() as conn:
        assert resolve_effect(conn, key, "succeeded", resolved_by="test")
        assert release_effect_holds(conn, [run_id]) == [run_id]
    _intent(engine, "k2", run_id)  # a second effect of the group goes in doubt meanwhile
    outcomes = run_cycle(instance, engine, SETTINGS, decided_by="sensor:test")
    assert [o.action for o in outcomes if o.run_id == run_id] == ["held"]
    with engine.connect() as conn:
        again = get_recovery(conn, run_id)
    assert again is not None and again.status == "held" and again.recovery_run_id is None
    assert "k2" in again.detail
    assert instance.get_runs_count() == 1  # nothing was launched


def test_two_releasers_at_once_release_a_hold_once(dagster_home: Path, engine: Engine) -> None:
    instance = DagsterInstance.get()
    run_id = _held_for_effects(instance, engine, "only")
    with engine.begin() as conn:
        assert resolve_effect(conn, "only", "failed", resolved_by="test")
    second: list[list[str]] = []
    with engine.connect() as first:
        tx = first.begin()
        assert release_effect_holds(first) == [run_id]  # deleted, not committed yet

        def other() -> None:
            with engine.begin() as conn:
                second.append(release_effect_holds(conn))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=2)  # blocked on the row the first one deleted, or done
        tx.commit()
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert second == [[]]
    with engine.connect() as conn:
        why = conn.execute(
            text("SELECT action, why FROM orbit.recovery_decisions WHERE parent_run_id = :r"),
            {"r": run_id},
        ).one()
    assert why.action == "wait" and "settled" in why.why
