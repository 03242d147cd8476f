"""Every private Dagster import orbit_pipelines uses, in one place.

Re-executing a failed run "from failure" as a *queued* run needs three things Dagster's
public API does not offer outside a webserver workspace: the parent's known execution state
(which steps finished, which outputs exist), an execution plan restricted to the unfinished
steps, and the code origin of a stored run. Keeping a recovery in its backfill also needs the backfill's
status, and keeping the asset-check selection needs a run created from a plan snapshot. ``orbit_pipelines_tests/recovery/
test_dagster_private.py`` imports each name and checks its signature, so a Dagster upgrade
that moves one fails CI loudly instead of failing a recovery at 3 a.m.

Reading the events of many runs at once (``detect.run_events``, ``step_states_for_runs``,
``last_events``: a thousand run groups in one query, where the public API reads one run at
a time) needs the event log table.
"""

from __future__ import annotations

from dagster._core.events import EngineEventData
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.remote_representation.external import RemoteExecutionPlan
from dagster._core.snap import snapshot_from_execution_plan
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.tags import RESUME_RETRY_TAG, TAGS_TO_MAYBE_OMIT_ON_RETRY
from dagster._utils.hosted_user_process import recon_job_from_origin

__all__ = [
    "RESUME_RETRY_TAG",
    "TAGS_TO_MAYBE_OMIT_ON_RETRY",
    "BulkActionStatus",
    "EngineEventData",
    "ExecutionPlan",
    "KnownExecutionState",
    "RemoteExecutionPlan",
    "SqlEventLogStorageTable",
    "create_execution_plan",
    "recon_job_from_origin",
    "snapshot_from_execution_plan",
]
