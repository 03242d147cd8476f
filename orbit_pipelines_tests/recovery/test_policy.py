"""Policy decisions on a real store: switches, error codes, doubt, budget, backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from orbit_pipelines.recovery.detect import Candidate
from orbit_pipelines.recovery.policy import backoff_s, decide
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.effect_ledger import effects_in_doubt, record_effect, resolve_effect
from orbit_pipelines.store.recoveries import claim_recovery, set_auto_recovery, set_group_control

SETTINGS = RecoverySettings(backoff_base_s=10, backoff_max_s=100, max_attempts=3)
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _candidate(**changes: object) -> Candidate:
    values: dict[str, object] = {
        "run_id": "run-1",
        "root_run_id": "root-1",
        "job_name": "job",
        "status": "FAILURE",
        "reason": "failed",
        "detail": "step failed",
        "failed_at": NOW,
    }
    values.update(changes)
    return Candidate(**values)  # type: ignore[arg-type]


def _decide(engine: Engine, candidate: Candidate, now: datetime = NOW) -> tuple[str, str, int]:
    with engine.connect() as conn:
        decision = decide(conn, candidate, SETTINGS, now=now)
    return decision.action, decision.why, decision.attempt


def _used(engine: Engine, count: int) -> None:
    with engine.begin() as conn:
        for number in range(count):
            claim_recovery(
                conn,
                parent_run_id=f"earlier-{number}",
                root_run_id="root-1",
                job_name="job",
                attempt=number + 1,
                reason="failed",
                detail="",
                decided_by="sensor",
                status="failed",
            )


def test_first_attempt_launches_at_once(engine: Engine) -> None:
    assert _decide(engine, _candidate())[0::2] == ("launch", 1)


def test_non_retryable_codes_are_held(engine: Engine) -> None:
    for code in ("E-1001", "E-5001", "E-1999"):
        action, why, _ = _decide(engine, _candidate(error_code=code))
        assert action == "hold" and code in why and "needs a person" in why
    assert _decide(engine, _candidate(error_code="E-3001"))[0] == "launch"


def test_effects_in_doubt_hold_the_group(engine: Engine) -> None:
    with engine.begin() as conn:
        for key, receiver in (("ok", "idempotent"), ("pay-7", "unsafe")):
            record_effect(
                conn,
                effect_key=key,
                root_run_id="root-1",
                step_key="s",
                receiver=receiver,
                status="intent",
            )
    action, why, _ = _decide(engine, _candidate())
    assert action == "hold" and "pay-7" in why and "ok [" not in why
    # What holds the group is exactly what `orbit effects` lists and a person can resolve.
    with engine.begin() as conn:
        assert [e.effect_key for e in effects_in_doubt(conn, "root-1")] == ["pay-7"]
        assert resolve_effect(conn, "pay-7", "failed")
    assert _decide(engine, _candidate())[0] == "launch"


def test_budget_and_backoff(engine: Engine) -> None:
    _used(engine, 1)
    delay = backoff_s("run-1", 2, SETTINGS)
    assert 8 <= delay <= 12 and delay == backoff_s("run-1", 2, SETTINGS)
    assert _decide(engine, _candidate(), NOW)[0] == "wait"
    assert _decide(engine, _candidate(), NOW + timedelta(seconds=delay + 0.1))[0::2] == (
        "launch",
        2,
    )
    _used_more = 2
    with engine.begin() as conn:
        for number in range(_used_more):
            claim_recovery(
                conn,
                parent_run_id=f"later-{number}",
                root_run_id="root-1",
                job_name="job",
                attempt=2 + number,
                reason="failed",
                detail="",
                decided_by="sensor",
                status="launched",
            )
    action, why, attempt = _decide(engine, _candidate(), NOW + timedelta(hours=1))
    assert (action, attempt) == ("hold", 4) and "budget" in why
    assert backoff_s("x", 10, SETTINGS) <= 100 * 1.2


def test_switches_skip(engine: Engine) -> None:
    assert _decide(engine, _candidate(tags={"orbit/auto_recover": "false"}))[0] == "skip"
    with engine.begin() as conn:
        set_group_control(conn, "root-1", abandoned=True)
    assert "abandoned" in _decide(engine, _candidate())[1]
    with engine.begin() as conn:
        set_group_control(conn, "root-1", abandoned=False, auto_recover=False)
    assert "run group" in _decide(engine, _candidate())[1]
    with engine.begin() as conn:
        set_group_control(conn, "root-1", auto_recover=True)
    assert _decide(engine, _candidate())[0] == "launch"
    with engine.begin() as conn:
        set_auto_recovery(conn, False)
    assert "everywhere" in _decide(engine, _candidate())[1]
