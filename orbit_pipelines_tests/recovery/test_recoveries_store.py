"""orbit.recoveries: the database, not an `if`, makes a recovery happen once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine, text

from orbit_pipelines.store.recoveries import (
    attempts_used,
    auto_recovery_enabled,
    claim_recovery,
    get_recovery,
    mark_finished,
    mark_launched,
    set_auto_recovery,
    stale_launches,
    take_over,
)


def _claim(engine: Engine, parent: str, by: str, **extra: object) -> object:
    with engine.begin() as conn:
        return claim_recovery(
            conn,
            parent_run_id=parent,
            root_run_id="root-1",
            job_name="job",
            attempt=1,
            reason="dead",
            detail="test",
            decided_by=by,
            **extra,  # type: ignore[arg-type]
        )


def test_eight_racing_claims_have_one_winner(engine: Engine) -> None:
    barrier = threading.Barrier(8)

    def race(number: int) -> object:
        barrier.wait()
        return _claim(engine, "parent-1", f"caller-{number}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(race, range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    with engine.connect() as conn:
        row = get_recovery(conn, "parent-1")
        assert row is not None and row.status == "launching"
        assert row.decided_by == winners[0].decided_by  # type: ignore[attr-defined]
        count = conn.execute(text("SELECT count(*) FROM orbit.recoveries")).scalar_one()
    assert count == 1


def test_take_over_only_a_stale_launching_row_and_only_once(engine: Engine) -> None:
    _claim(engine, "parent-2", "crashed-launcher")
    with engine.begin() as conn:
        assert take_over(conn, parent_run_id="parent-2", decided_by="x", stale_after_s=60) is None
        conn.execute(
            text(
                "UPDATE orbit.recoveries SET detected_at = now() - interval '5 minutes'"
                " WHERE parent_run_id = 'parent-2'"
            )
        )
    barrier = threading.Barrier(4)

    def race(number: int) -> object:
        barrier.wait()
        with engine.begin() as conn:
            return take_over(
                conn, parent_run_id="parent-2", decided_by=f"t-{number}", stale_after_s=60
            )

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert sum(r is not None for r in pool.map(race, range(4))) == 1


def test_held_rows_are_released_only_on_request_and_do_not_use_the_budget(engine: Engine) -> None:
    _claim(engine, "parent-3", "sensor", status="held")
    with engine.begin() as conn:
        assert attempts_used(conn, "root-1") == 0
        assert take_over(conn, parent_run_id="parent-3", decided_by="cli", stale_after_s=60) is None
        row = take_over(
            conn, parent_run_id="parent-3", decided_by="cli", stale_after_s=60, from_held=True
        )
        assert row is not None and row.status == "launching" and row.decided_by == "cli"
        assert attempts_used(conn, "root-1") == 1
        mark_launched(conn, parent_run_id="parent-3", recovery_run_id="child-3")
        assert mark_finished(conn, parent_run_id="parent-3", status="succeeded", outcome="SUCCESS")
        assert not mark_finished(conn, parent_run_id="parent-3", status="failed", outcome="x")
        final = get_recovery(conn, "parent-3")
    assert final is not None and final.status == "succeeded" and final.finished_at is not None
    assert final.launched_at is not None and final.recovery_run_id == "child-3"


def test_global_switch(engine: Engine) -> None:
    with engine.begin() as conn:
        assert auto_recovery_enabled(conn)
        set_auto_recovery(conn, False)
        assert not auto_recovery_enabled(conn)
        set_auto_recovery(conn, True)
        assert auto_recovery_enabled(conn)


def test_stale_launches_lists_only_old_launching_rows(engine: Engine) -> None:
    _claim(engine, "fresh", "a")
    _claim(engine, "old", "b")
    _claim(engine, "old-held", "c", status="held")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE orbit.recoveries SET detected_at = now() - interval '10 minutes'"
                " WHERE parent_run_id IN ('old', 'old-held')"
            )
        )
        assert [r.parent_run_id for r in stale_launches(conn, 120)] == ["old"]
