"""Keep a running backfill open while orbit may still recover one of its runs.

Dagster's backfill daemon ends a backfill once every targeted partition is materialized or
failed and ``backfill_runs_are_complete``: no run of it in progress and none "waiting to
retry" (a FAILURE run tagged ``dagster/will_retry=true`` without
``dagster/auto_retry_run_id``, ``DagsterRun.is_complete_and_waiting_to_retry``). Only
Dagster's own run retries (off under orbit: one owner of re-execution) set that tag, so a run
that failed while nothing else of the backfill was in progress ended the backfill
COMPLETED_FAILED before orbit's sensor had created the recovery, which then ran outside it.

orbit speaks Dagster's protocol instead: a run of a running backfill is tagged
``will_retry=true`` *before* it can fail (here, when a row step starts; by the sensor, when it
sees the run in progress; at creation, for a recovery run), ``recovery.launch`` sets
``auto_retry_run_id`` when the recovery exists, and the sensor sets ``will_retry=false``
whenever it decides not to recover (``recovery.backfill_hold``), so the backfill can end.

Here is what a step process may do: it sits below ``recovery/`` and cannot ask the policy.
"""

from __future__ import annotations

import logging

from dagster import DagsterInstance, DagsterRun
from sqlalchemy import Engine

from orbit_pipelines.store.recoveries import auto_recovery_enabled
from orbit_pipelines.tags import AUTO_RECOVER_TAG, BACKFILL_TAG, WILL_RETRY_TAG

# ``BulkActionStatus.REQUESTED``: compared by value so this layer needs no private import
# (``recovery.dagster_private`` holds the enum; the value is stored data and does not move).
BACKFILL_RUNNING = "REQUESTED"

_log = logging.getLogger(__name__)


def backfill_accepts_runs(instance: DagsterInstance, backfill_id: str | None) -> bool:
    """Whether the backfill ``backfill_id`` is still running (``REQUESTED``): only then does
    Dagster keep a retry of its run in it, and only then does waiting for one matter."""
    if not backfill_id:
        return False
    backfill = instance.get_backfill(backfill_id)
    return backfill is not None and backfill.status.value == BACKFILL_RUNNING


def recovery_switched_off_by_tag(run: DagsterRun) -> bool:
    """The run (or its job) says ``orbit/auto_recover: "false"``: orbit will not retry it."""
    return run.tags.get(AUTO_RECOVER_TAG, "").strip().lower() == "false"


def mark_backfill_run_at_start(instance: DagsterInstance, run: DagsterRun, engine: Engine) -> bool:
    """Tag ``run`` ``dagster/will_retry=true`` if it belongs to a running backfill and orbit
    would recover it, so that a failure of this step keeps the backfill open until the
    recovery sensor has decided. Returns whether the tag was written.

    Called by ``run_rows`` / ``run_frames`` before the first row. Skipped when the run already
    says ``will_retry`` (a recovery run is created with it), when automatic recovery is off by
    the run's tag or everywhere (the sensor would skip the run: no point holding the backfill
    for a moment). The sensor clears the tag when it decides not to recover; without a
    recovery sensor (or ``orbit recover``) for this code location nothing would, and the
    backfill would wait until someone cancels it: orbit needs its sensor deployed anyway.

    Never fails the step: a failure to tag only reopens the window this closes.
    """
    backfill_id = run.tags.get(BACKFILL_TAG)
    if not backfill_id or run.tags.get(WILL_RETRY_TAG) is not None:
        return False
    if recovery_switched_off_by_tag(run):
        return False
    try:
        with engine.connect() as conn:
            if not auto_recovery_enabled(conn):
                return False
        if not backfill_accepts_runs(instance, backfill_id):
            return False
        instance.add_run_tags(run.run_id, {WILL_RETRY_TAG: "true"})
    except Exception:  # the step's own work matters more than the backfill's bookkeeping
        _log.warning("could not tag run %s as awaiting orbit's retry", run.run_id, exc_info=True)
        return False
    return True
