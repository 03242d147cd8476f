"""Every run tag orbit writes or reads, and the one rule for a run group's root.

Nothing else in the package spells a tag. Dagster's own names are repeated here as plain
strings (they are part of Dagster's stored data, so they do not move between versions;
``orbit_pipelines_tests/recovery/test_tags.py`` checks them against Dagster's constants).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

# orbit's own tags.
ROOT_RUN_TAG = "orbit/root_run"
RECOVERY_OF_TAG = "orbit/recovery_of"
ATTEMPT_TAG = "orbit/attempt"
DECIDED_BY_TAG = "orbit/decided_by"
RESTART_OF_TAG = "orbit/restart_of"
AUTO_RECOVER_TAG = "orbit/auto_recover"
# On a run orbit holds or does not recover: why, in words (``recovery/announce.py``).
DECISION_TAG = "orbit/decision"

# Every tag orbit writes on the runs it creates: never copied from a parent to a child.
ORBIT_RUN_TAGS = frozenset(
    {ROOT_RUN_TAG, RECOVERY_OF_TAG, ATTEMPT_TAG, DECIDED_BY_TAG, RESTART_OF_TAG, DECISION_TAG}
)

# Dagster's tags (dagster/_core/storage/tags.py).
SYSTEM_TAG_PREFIX = "dagster/"
HIDDEN_TAG_PREFIX = ".dagster/"
PARENT_RUN_ID_TAG = "dagster/parent_run_id"
ROOT_RUN_ID_TAG = "dagster/root_run_id"
RESUME_RETRY_TAG = "dagster/is_resume_retry"
PARTITION_TAG = "dagster/partition"
# Multi-dimensional partitions: one "dagster/partition/<dimension>" tag per dimension.
PARTITION_DIMENSION_PREFIX = "dagster/partition/"
PARTITION_SET_TAG = "dagster/partition_set"
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
BACKFILL_TAG = "dagster/backfill"
PARENT_BACKFILL_TAG = "dagster/parent_backfill_id"
ROOT_BACKFILL_TAG = "dagster/root_backfill_id"
BACKFILL_TAGS = frozenset({BACKFILL_TAG, PARENT_BACKFILL_TAG, ROOT_BACKFILL_TAG})
STEP_SELECTION_TAG = "dagster/step_selection"
WILL_RETRY_TAG = "dagster/will_retry"
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"
# Who launched a run: the UI's "Launched by" (a sensor's name; its tick links the tick).
SENSOR_NAME_TAG = "dagster/sensor_name"
SCHEDULE_NAME_TAG = "dagster/schedule_name"
TICK_ID_TAG = "dagster/tick"
INSTIGATOR_TAGS = frozenset({SENSOR_NAME_TAG, SCHEDULE_NAME_TAG, TICK_ID_TAG})


class _RunLike(Protocol):
    @property
    def run_id(self) -> str: ...

    @property
    def root_run_id(self) -> str | None: ...

    @property
    def tags(self) -> Mapping[str, str]: ...


def root_run_id_of(run: _RunLike) -> str:
    """The run group's root of ``run``: the one key of a logical run's checkpoints.

    Dagster's ``root_run_id`` field first (every re-execution sets it: the UI's, ``execute_job``'s
    and orbit's), then the ``dagster/root_run_id`` and ``orbit/root_run`` tags (a run created
    with tags only), else the run itself: an original run — each partition's run of a
    backfill included — is its own root.
    """
    return (
        run.root_run_id or run.tags.get(ROOT_RUN_ID_TAG) or run.tags.get(ROOT_RUN_TAG) or run.run_id
    )


def inherited_tags(
    parent_tags: Mapping[str, str],
    omit: frozenset[str] | set[str],
    *,
    keep_backfill: bool,
) -> dict[str, str]:
    """The parent's tags a child run of the same group keeps: Dagster's rule for a retry
    (``create_reexecuted_run`` with ``use_parent_run_tags``: everything but ``omit``, the
    backfill tags only while the backfill is still running), minus the group tags and orbit's
    own per-run tags, which the caller sets afresh.

    What identifies what the run was for survives: partition, partition range, partition set,
    asset selection tags, and every user tag.
    """
    dropped = set(omit) | ORBIT_RUN_TAGS | {PARENT_RUN_ID_TAG, ROOT_RUN_ID_TAG}
    if not keep_backfill:
        dropped |= BACKFILL_TAGS
    else:
        dropped -= BACKFILL_TAGS
    return {k: v for k, v in parent_tags.items() if k not in dropped}
