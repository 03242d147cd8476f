"""Runs of a running backfill say whether orbit will retry them (``dagster/will_retry``),
against a real Dagster instance and orbit store: what the backfill daemon reads to decide
whether the backfill may end (``DagsterRun.is_complete_and_waiting_to_retry``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, job, op
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from sqlalchemy import Engine

from orbit_pipelines.dagster_io.backfill_retry import mark_backfill_run_at_start
from orbit_pipelines.recovery.backfill_hold import settle_backfill_runs
from orbit_pipelines.recovery.child_run import child_run_tags
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.recoveries import (
    claim_recovery,
    mark_launched,
    save_decisions,
    set_auto_recovery,
    set_group_control,
)
from orbit_pipelines.tags import AUTO_RETRY_RUN_ID_TAG, BACKFILL_TAG, WILL_RETRY_TAG
from orbit_pipelines_tests.partitions.location import defs as partition_defs

SETTINGS = RecoverySettings()


@op
def noop() -> None:
    """Nothing."""


@job
def plain_job() -> None:
    """A job of the code location."""
    noop()


@job
def other_job() -> None:
    """A job of another code location (the sensor's job filter leaves it out)."""
    noop()


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


def _failed(instance: DagsterInstance, backfill_id: str, **tags: str) -> DagsterRun:
    run = instance.create_run_for_job(plain_job, tags={BACKFILL_TAG: backfill_id, **tags})
    instance.report_run_failed(run, "failed")
    return _now(instance, run)


def _now(instance: DagsterInstance, run: DagsterRun) -> DagsterRun:
    found = instance.get_run_by_id(run.run_id)
    assert found is not None
    return found


def _decide(engine: Engine, run: DagsterRun, action: str, why: str, depends: str) -> None:
    with engine.begin() as conn:
        save_decisions(
            conn,
            [
                {
                    "parent_run_id": run.run_id,
                    "root_run_id": run.run_id,
                    "job_name": run.job_name,
                    "reason": "failed",
                    "detail": "step failed",
                    "error_code": "E-5001" if action == "hold" else "E-3001",
                    "failed_at": datetime.now(UTC),
                    "tags": dict(run.tags),
                    "action": action,
                    "why": why,
                    "depends": depends,
                    "not_before": datetime.now(UTC) if depends == "backoff" else None,
                    "decided_by": "test",
                }
            ],
        )


def _settle(instance: DagsterInstance, engine: Engine) -> list[str]:
    return settle_backfill_runs(instance, engine, SETTINGS, keep=lambda name: name == "plain_job")


def test_a_row_step_start_tags_a_run_of_a_running_backfill_only(
    dagster_home: Path, engine: Engine
) -> None:
    instance = DagsterInstance.get()
    _add_backfill(instance, "bfstart")
    run = instance.create_run_for_job(plain_job, tags={BACKFILL_TAG: "bfstart"})
    assert mark_backfill_run_at_start(instance, run, engine)
    instance.report_run_failed(run, "killed")
    # Failed before any sensor saw it: the backfill waits (Dagster's own check).
    assert _now(instance, run).is_complete_and_waiting_to_retry

    loose = instance.create_run_for_job(plain_job)
    assert not mark_backfill_run_at_start(instance, loose, engine)
    switched = instance.create_run_for_job(
        plain_job, tags={BACKFILL_TAG: "bfstart", "orbit/auto_recover": "false"}
    )
    assert not mark_backfill_run_at_start(instance, switched, engine)
    _add_backfill(instance, "bfdone")
    done = instance.get_backfill("bfdone")
    assert done is not None
    instance.update_backfill(done.with_status(BulkActionStatus.COMPLETED_SUCCESS))
    late = instance.create_run_for_job(plain_job, tags={BACKFILL_TAG: "bfdone"})
    assert not mark_backfill_run_at_start(instance, late, engine)
    with engine.begin() as conn:
        set_auto_recovery(conn, False)
    off = instance.create_run_for_job(plain_job, tags={BACKFILL_TAG: "bfstart"})
    assert not mark_backfill_run_at_start(instance, off, engine)
    for other in (loose, switched, late, off):
        assert WILL_RETRY_TAG not in _now(instance, other).tags


def test_a_recovery_in_a_running_backfill_is_created_waiting_for_its_retry(
    dagster_home: Path,
) -> None:
    instance = DagsterInstance.get()
    _add_backfill(instance, "bfchild")
    parent = _failed(instance, "bfchild")
    tags = child_run_tags(instance, plain_job, parent)
    assert tags[BACKFILL_TAG] == "bfchild" and tags[WILL_RETRY_TAG] == "true"
    alone = instance.create_run_for_job(plain_job)
    instance.report_run_failed(alone, "failed")
    assert WILL_RETRY_TAG not in child_run_tags(instance, plain_job, _now(instance, alone))


def test_the_sensor_tags_runs_in_progress_of_its_own_jobs(
    dagster_home: Path, engine: Engine
) -> None:
    instance = DagsterInstance.get()
    _add_backfill(instance, "bfrun")
    mine = instance.create_run_for_job(
        plain_job, tags={BACKFILL_TAG: "bfrun"}, status=DagsterRunStatus.STARTED
    )
    theirs = instance.create_run_for_job(
        other_job, tags={BACKFILL_TAG: "bfrun"}, status=DagsterRunStatus.STARTED
    )
    waiting = instance.create_run_for_job(
        plain_job, tags={BACKFILL_TAG: "bfrun"}, status=DagsterRunStatus.NOT_STARTED
    )
    assert len(_settle(instance, engine)) == 1
    assert _now(instance, mine).tags[WILL_RETRY_TAG] == "true"
    assert WILL_RETRY_TAG not in _now(instance, theirs).tags
    assert WILL_RETRY_TAG not in _now(instance, waiting).tags
    assert _settle(instance, engine) == []  # nothing new: nothing written


@pytest.mark.parametrize(
    ("action", "why", "depends"),
    [
        ("hold", "E-5001 (unauthorized) is never retried automatically", "final"),
        ("hold", "attempt budget used up (3 recoveries); needs a person", "final"),
        ("skip", "automatic recovery is off everywhere", "switch_global"),
    ],
)
def test_a_run_orbit_will_not_recover_stops_holding_the_backfill(
    dagster_home: Path, engine: Engine, action: str, why: str, depends: str
) -> None:
    instance = DagsterInstance.get()
    _add_backfill(instance, "bfno")
    run = _failed(instance, "bfno", **{WILL_RETRY_TAG: "true"})
    assert run.is_complete_and_waiting_to_retry
    assert _settle(instance, engine) == []  # not decided yet: the backfill keeps waiting
    assert run.run_id in _settle_after(instance, engine, run, action, why, depends)
    settled = _now(instance, run)
    assert settled.tags[WILL_RETRY_TAG] == "false"
    assert not settled.is_complete_and_waiting_to_retry


def _settle_after(
    instance: DagsterInstance, engine: Engine, run: DagsterRun, action: str, why: str, dep: str
) -> str:
    _decide(engine, run, action, why, dep)
    return "\n".join(_settle(instance, engine))


def test_a_held_or_abandoned_run_stops_holding_the_backfill(
    dagster_home: Path, engine: Engine
) -> None:
    instance = DagsterInstance.get()
    _add_backfill(instance, "bfheld")
    held = _failed(instance, "bfheld", **{WILL_RETRY_TAG: "true"})
    cancelled = _failed(instance, "bfheld", **{WILL_RETRY_TAG: "true"})
    with engine.begin() as conn:
        claim_recovery(
            conn,
            parent_run_id=held.run_id,
            root_run_id=held.run_id,
            job_name=held.job_name,
            attempt=1,
            reason="failed",
            detail="effects in doubt",
            decided_by="test",
            status="held",
        )
        # `orbit cancel`: the group is abandoned, whatever was decided before.
        set_group_control(conn, cancelled.run_id, abandoned=True)
    _decide(engine, cancelled, "wait", "attempt 2 backs off 40s more", "backoff")
    _settle(instance, engine)
    for run in (held, cancelled):
        assert _now(instance, run).tags[WILL_RETRY_TAG] == "false"


def test_a_run_in_backoff_or_already_retried_is_linked_to_its_retry(
    dagster_home: Path, engine: Engine
) -> None:
    instance = DagsterInstance.get()
    _add_backfill(instance, "bflater")
    # Failed outside a row step, before anything tagged it; orbit backs off.
    backoff = _failed(instance, "bflater")
    _decide(engine, backoff, "wait", "attempt 2 backs off 40s more", "backoff")
    # The launcher created the recovery run and died before tagging the parent.
    launched = _failed(instance, "bflater", **{WILL_RETRY_TAG: "true"})
    with engine.begin() as conn:
        claim_recovery(
            conn,
            parent_run_id=launched.run_id,
            root_run_id=launched.run_id,
            job_name=launched.job_name,
            attempt=1,
            reason="failed",
            detail="",
            decided_by="test",
        )
        mark_launched(conn, parent_run_id=launched.run_id, recovery_run_id="recovery-1")
    # Someone re-executed it from the UI.
    by_hand = _failed(instance, "bflater", **{WILL_RETRY_TAG: "true"})
    child = instance.create_run_for_job(
        plain_job,
        tags={"dagster/parent_run_id": by_hand.run_id, "dagster/root_run_id": by_hand.run_id},
        parent_run_id=by_hand.run_id,
        root_run_id=by_hand.run_id,
    )
    _settle(instance, engine)
    assert _now(instance, backoff).is_complete_and_waiting_to_retry
    assert _now(instance, launched).tags[AUTO_RETRY_RUN_ID_TAG] == "recovery-1"
    assert _now(instance, by_hand).tags[AUTO_RETRY_RUN_ID_TAG] == child.run_id
    for run in (launched, by_hand):
        assert not _now(instance, run).is_complete_and_waiting_to_retry
