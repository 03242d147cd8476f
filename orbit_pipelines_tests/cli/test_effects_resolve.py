"""A resolved effect releases the hold: the store's release, then the whole path with a real
daemon and sensor (a worker SIGKILLed between an unsafe effect's intent and its outcome)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from sqlalchemy import Engine, text

from orbit_pipelines.recovery.detect import Candidate
from orbit_pipelines.recovery.policy import decide_with
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.effect_ledger import record_effect, resolve_effect
from orbit_pipelines.store.recoveries import (
    claim_recovery,
    due_decisions,
    get_decision,
    get_recovery,
    mark_launch_failed,
    policy_facts,
    recoveries_for_group,
    release_effect_holds,
    save_decisions,
    set_auto_recovery,
    take_over,
)
from orbit_pipelines_tests.cli.conftest import CliResult
from orbit_pipelines_tests.cli.doubt_location import DOUBT_TABLE
from orbit_pipelines_tests.processes import ChildProcesses, wait_for
from orbit_pipelines_tests.sensors.harness import REPO_ROOT, Harness

ENDED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


def _effect(conn: object, key: str, root: str, status: str = "intent") -> None:
    record_effect(
        conn,  # type: ignore[arg-type]
        effect_key=key,
        root_run_id=root,
        step_key="send",
        row_key="1",
        receiver="unsafe",
        status=status,
    )


def _hold(conn: object, parent: str, root: str, why: str, depends: str) -> None:
    claim_recovery(
        conn,  # type: ignore[arg-type]
        parent_run_id=parent,
        root_run_id=root,
        job_name="job",
        attempt=1,
        reason="dead",
        detail=f"worker gone | held: {why}",
        decided_by="sensor:test",
        status="held",
    )
    save_decisions(
        conn,  # type: ignore[arg-type]
        [
            {
                "parent_run_id": parent,
                "root_run_id": root,
                "job_name": "job",
                "reason": "dead",
                "detail": "worker gone",
                "error_code": None,
                "failed_at": None,
                "tags": {},
                "action": "hold",
                "why": why,
                "depends": depends,
                "not_before": None,
                "decided_by": "sensor:test",
            }
        ],
    )


def test_the_policy_holds_for_effects_in_doubt_until_they_are_settled(engine: Engine) -> None:
    with engine.begin() as conn:
        _effect(conn, "g/send/sms-1", "g")
        facts = policy_facts(conn, ["g"])
    candidate = Candidate("g", "g", "job", "FAILURE", "dead", "worker gone", {}, None)
    decision = decide_with(facts, candidate, RecoverySettings())
    assert (decision.action, decision.depends) == ("hold", "final")
    assert decision.why.startswith("1 side effect(s) in doubt: g/send/sms-1 [unsafe, intent]")
    assert "orbit effects resolve" in decision.why


def test_release_waits_for_every_effect_and_leaves_other_holds_alone(engine: Engine) -> None:
    with engine.begin() as conn:
        _effect(conn, "g/send/sms-1", "g")
        _effect(conn, "g/send/sms-2", "g")
        _hold(conn, "g", "g", "2 side effect(s) in doubt: ...", "final")
        # Remembered before 'effects' existed: recognised by its words.
        _effect(conn, "old/send/sms-1", "old")
        _hold(
            conn,
            "old",
            "old",
            "1 side effect(s) in doubt: old/send/sms-1 [unsafe, intent]; reconcile before resuming",
            "final",
        )
        # Held for another reason, with nothing in doubt: stays held.
        _hold(conn, "budget", "budget", "attempt budget used up (3 recoveries)", "final")

    with engine.begin() as conn:
        assert resolve_effect(conn, "g/send/sms-1", "succeeded")
        assert release_effect_holds(conn) == []  # sms-2 is still in doubt
        assert resolve_effect(conn, "g/send/sms-2", "failed")
        assert resolve_effect(conn, "old/send/sms-1", "succeeded")
        assert sorted(release_effect_holds(conn)) == ["g", "old"]
        assert release_effect_holds(conn) == []  # released once
    with engine.connect() as conn:
        assert get_recovery(conn, "g") is None and get_recovery(conn, "old") is None
        assert get_recovery(conn, "budget") is not None
        decision = get_decision(conn, "g")
        assert decision is not None and (decision.action, decision.depends) == ("wait", "backoff")
        assert {d.parent_run_id for d in due_decisions(conn, limit=10)} == {"g", "old"}


def test_a_hold_a_person_resumed_is_not_released(engine: Engine) -> None:
    with engine.begin() as conn:
        _effect(conn, "g/send/sms-1", "g")
        _hold(conn, "g", "g", "1 side effect(s) in doubt: ...", "final")
        took = take_over(
            conn, parent_run_id="g", decided_by="cli", stale_after_s=60, from_held=True
        )
        assert took is not None and took.outcome is None
        resolve_effect(conn, "g/send/sms-1", "succeeded")
        assert release_effect_holds(conn) == []
    with engine.connect() as conn:
        row = get_recovery(conn, "g")
        assert row is not None and row.status == "launching"


def test_a_failed_launch_is_held_with_its_error_and_a_resume_clears_it(engine: Engine) -> None:
    with engine.begin() as conn:
        _hold(conn, "g", "g", "1 side effect(s) in doubt: ...", "final")
        assert take_over(
            conn, parent_run_id="g", decided_by="cli", stale_after_s=60, from_held=True
        )
        mark_launch_failed(conn, parent_run_id="g", outcome="launch failed: E-2008 X is not set")
        held = get_recovery(conn, "g")
        assert held is not None and held.status == "held"
        # The hold says why now (the launch), not the earlier reason.
        assert held.detail == "worker gone | held: launch failed: E-2008 X is not set"
        # Nothing is in doubt, but this hold waits for a person, not for effects.
        assert release_effect_holds(conn) == []
        again = take_over(
            conn, parent_run_id="g", decided_by="cli", stale_after_s=60, from_held=True
        )
        assert again is not None and (again.status, again.outcome) == ("launching", None)


def test_due_decisions_release_effects_settled_outside_the_cli(engine: Engine) -> None:
    """The sensor's pass finds the hold released however the effect was settled."""
    with engine.begin() as conn:
        _effect(conn, "g/send/sms-1", "g")
        _hold(conn, "g", "g", "1 side effect(s) in doubt: ...", "final")
    with engine.begin() as conn:
        assert due_decisions(conn, limit=10) == []
        resolve_effect(conn, "g/send/sms-1", "succeeded", resolved_by="reconcile")
    with engine.begin() as conn:
        assert [d.parent_run_id for d in due_decisions(conn, limit=10)] == ["g"]
        assert get_recovery(conn, "g") is None


# --- e2e: real daemon, real sensor, real SIGKILL ---


@pytest.fixture
def doubt_harness(
    dagster_home: Path, db_url: str, engine: Engine, children: ChildProcesses, tmp_path: Path
) -> Iterator[Harness]:
    """The recovery e2e harness on the doubt location."""
    harness = Harness(
        home=dagster_home, db_url=db_url, engine=engine, children=children, tmp=tmp_path
    )
    harness.workspace.write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: orbit_pipelines_tests.cli.doubt_location\n"
        "      location_name: orbit_doubt\n"
        f"      working_directory: {REPO_ROOT}\n"
    )
    with engine.begin() as conn:
        conn.execute(text(DOUBT_TABLE))
    yield harness


def _sent(engine: Engine, root: str) -> dict[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT row_no, count(*) FROM public.doubt_sent WHERE root_run_id = :g"
                " GROUP BY row_no"
            ),
            {"g": root},
        )
        return {int(r[0]): int(r[1]) for r in rows}


@pytest.mark.e2e
def test_resolving_the_effect_in_doubt_lets_the_sensor_resume_the_group(
    doubt_harness: Harness, orbit_cli: Callable[..., CliResult]
) -> None:
    harness = doubt_harness
    harness.start_daemon()
    rows = 6
    run_id = harness.launch_job(
        "doubt_job", {"ops": {"send_rows": {"config": {"rows": rows, "kill_at": 2}}}}
    )

    def held() -> bool:
        with harness.engine.connect() as conn:
            return any(r.status == "held" for r in recoveries_for_group(conn, run_id))

    wait_for(held, timeout_s=180, what="the sensor holding the group")
    assert harness.children_of(run_id) == []
    key = f"{run_id}/send_rows/sms-2"
    listed = orbit_cli("check-interrupted")
    assert listed.returncode == 1 and key in listed.stdout, listed.stdout
    effects = json.loads(orbit_cli("effects", run_id, "--json").stdout)
    assert [e["effect_key"] for e in effects["in_doubt"]] == [key]

    # A person checked the receiver: row 2's message did go out.
    said = orbit_cli("effects", "resolve", key, "--succeeded")
    assert said.returncode == 0, said.stderr
    assert f"effect {key} settled as succeeded" in said.stdout
    assert (
        f"nothing left in doubt; the recovery sensor will resume run group {run_id} at its "
        "next tick" in said.stdout
    )
    after = orbit_cli("check-interrupted")
    assert key not in after.stdout and "in doubt" not in after.stdout, after.stdout

    # The sensor, not a person, launches the recovery.
    child = harness.wait_child(run_id, timeout_s=180)
    assert (
        harness.wait_status(child.run_id, ENDED, timeout_s=180).status == DagsterRunStatus.SUCCESS
    )
    with harness.engine.connect() as conn:
        (recovery,) = recoveries_for_group(conn, run_id)
    assert recovery.decided_by.startswith("sensor:") and recovery.status in (
        "launched",
        "succeeded",
    )
    assert _sent(harness.engine, run_id) == dict.fromkeys(range(rows), 1)
    final = json.loads(orbit_cli("status", run_id, "--json").stdout)
    assert final["in_doubt"] == [] and final["state"] == "succeeded", final
    assert orbit_cli("check-interrupted").returncode == 0


def test_resolve_says_what_happens_next(
    dagster_home: Path, engine: Engine, orbit_cli: Callable[..., CliResult]
) -> None:
    with engine.begin() as conn:
        _effect(conn, "g/send/sms-1", "g")
        _effect(conn, "g/send/sms-2", "g")
        _hold(conn, "g", "g", "2 side effect(s) in doubt: ...", "final")
        set_auto_recovery(conn, False)

    first = orbit_cli("effects", "resolve", "g/send/sms-1", "--failed", "--json")
    assert first.returncode == 0, first.stderr
    body = json.loads(first.stdout)
    assert (body["still_in_doubt"], body["released"]) == (["g/send/sms-2"], [])
    assert "1 side effect(s) still in doubt in run group g: g/send/sms-2" in body["next"]

    last = orbit_cli("effects", "resolve", "g/send/sms-2", "--succeeded")
    assert last.returncode == 0, last.stderr
    assert "effect g/send/sms-2 settled as succeeded" in last.stdout
    assert (
        "nothing left in doubt, but automatic recovery is off everywhere "
        "(orbit.settings auto_recovery=false): the recovery sensor will not resume run group "
        "g; resume it yourself: orbit resume g" in last.stdout
    )
    unknown = orbit_cli("effects", "resolve", "g/send/sms-2", "--succeeded")
    assert unknown.returncode == 1 and "is not in doubt" in unknown.stderr
