"""Breaker (session 4): ``orbit cancel`` of a group whose recovery launch was claimed but
whose launcher crashed before creating the run ('launching', stale). Before the fix the
next pass took the launch over and launched the recovery of the abandoned group anyway
(``finish_stale_launches`` ignored the group's control), and a backfill waiting for that
run was told orbit will retry it. Real Dagster instance and orbit store on Postgres."""

from __future__ import annotations

import time
from pathlib import Path

from dagster import AssetKey, DagsterInstance
from dagster._core.execution.backfill import PartitionBackfill
from sqlalchemy import Engine

from orbit_pipelines.recovery.backfill_hold import settle_backfill_runs
from orbit_pipelines.recovery.cycle import run_cycle
from orbit_pipelines.recovery.manual import cancel_group
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.recoveries import (
    claim_recovery,
    due_decisions,
    get_decision,
    get_recovery,
    save_decisions,
    set_group_control,
)
from orbit_pipelines.tags import BACKFILL_TAG, WILL_RETRY_TAG
from orbit_pipelines_tests.partitions.location import defs as partition_defs
from orbit_pipelines_tests.recovery.many_runs import failed_runs

# Every 'launching' row counts as stale at once (its launcher is gone).
SETTINGS = RecoverySettings(launch_takeover_s=0.0)


def _add_backfill(instance: DagsterInstance, backfill_id: str) -> None:
    instance.add_backfill(
        PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id,
            asset_graph=partition_defs.get_repository_def().asset_graph,
            partition_names=["2026-11-01"],
            asset_selection=[AssetKey("daily_orders")],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
    )


def test_a_stale_launch_of_a_cancelled_group_is_not_taken_over(
    dagster_home: Path, engine: Engine
) -> None:
    instance = DagsterInstance.get()
    _add_backfill(instance, "bfcancel")
    [run_id] = failed_runs(instance, 1, tags={BACKFILL_TAG: "bfcancel", WILL_RETRY_TAG: "true"})
    with engine.begin() as conn:
        # The sensor decided to launch and crashed before creating the recovery run.
        claim_recovery(
            conn,
            parent_run_id=run_id,
            root_run_id=run_id,
            job_name="quiet_job",
            attempt=1,
            reason="failed",
            detail="worker lost",
            decided_by="sensor:test",
        )
        save_decisions(conn, [_launch_decision(run_id)])
    latest = instance.get_run_by_id(run_id)
    assert latest is not None
    cancel_group(instance, engine, run_id, latest, SETTINGS)  # what `orbit cancel` runs

    outcomes = run_cycle(instance, engine, SETTINGS, decided_by="sensor:test")
    mine = [o for o in outcomes if o.run_id == run_id]
    # No launch was attempted (this run has no code origin: an attempt is an 'error').
    assert all(o.action not in ("launched", "error") for o in mine), mine
    assert instance.get_runs_count() == 1
    with engine.connect() as conn:
        assert get_recovery(conn, run_id) is None  # undone: it never launched
        decision = get_decision(conn, run_id)
    assert decision is not None and decision.action == "skip" and "cancel" in decision.why
    # The backfill is told orbit will not retry it, so it can end.
    settle_backfill_runs(instance, engine, SETTINGS)
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.tags[WILL_RETRY_TAG] == "false"
    assert not run.is_complete_and_waiting_to_retry
    # `orbit cancel --undo`: the sensor decides about it again (as after any cancel).
    with engine.begin() as conn:
        set_group_control(conn, run_id, abandoned=False)
        assert run_id in [d.parent_run_id for d in due_decisions(conn, limit=10)]


def _launch_decision(run_id: str) -> dict[str, object]:
    return {
        "parent_run_id": run_id,
        "root_run_id": run_id,
        "job_name": "quiet_job",
        "reason": "failed",
        "detail": "worker lost",
        "error_code": None,
        "failed_at": None,
        "tags": {},
        "action": "launch",
        "why": "attempt 1 of 3",
        "depends": "final",
        "not_before": None,
        "decided_by": "sensor:test",
    }


def test_a_group_cancelled_during_the_pass_is_not_launched(
    dagster_home: Path, engine: Engine
) -> None:
    """The pass decides for every candidate first and launches one after another; a person's
    `orbit cancel` of a later group while earlier ones are handled must still count."""
    instance = DagsterInstance.get()
    _first, second = failed_runs(instance, 2)  # handled in failure order
    settings = RecoverySettings(backoff_base_s=0.0, backoff_max_s=0.0)
    cancelled: list[str] = []

    def lookup(_job_name: str) -> None:
        # Runs while the pass handles the first run: the person cancels `second` meanwhile.
        if not cancelled:
            latest = instance.get_run_by_id(second)
            assert latest is not None
            cancel_group(instance, engine, second, latest, settings)
            cancelled.append(second)

    outcomes = run_cycle(instance, engine, settings, decided_by="sensor:test", job_lookup=lookup)
    assert cancelled == [second]
    actions = {o.run_id: o.action for o in outcomes}
    assert actions[second] == "skipped", outcomes
    with engine.connect() as conn:
        assert get_recovery(conn, second) is None
        decision = get_decision(conn, second)
    assert decision is not None and decision.action == "skip"
    assert decision.depends == "switch_group"
