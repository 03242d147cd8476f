"""The tag names orbit spells are Dagster's, and the one rule for a run group's root."""

from __future__ import annotations

from dagster import DagsterRun
from dagster._core.storage import tags as dagster_tags

from orbit_pipelines import tags
from orbit_pipelines.recovery import dagster_private as dp


def test_dagster_tag_names_match_dagsters_constants() -> None:
    assert tags.PARENT_RUN_ID_TAG == dagster_tags.PARENT_RUN_ID_TAG
    assert tags.ROOT_RUN_ID_TAG == dagster_tags.ROOT_RUN_ID_TAG
    assert tags.RESUME_RETRY_TAG == dagster_tags.RESUME_RETRY_TAG
    assert tags.PARTITION_TAG == dagster_tags.PARTITION_NAME_TAG
    assert tags.PARTITION_DIMENSION_PREFIX == dagster_tags.MULTIDIMENSIONAL_PARTITION_PREFIX
    assert tags.PARTITION_SET_TAG == dagster_tags.PARTITION_SET_TAG
    assert tags.PARTITION_RANGE_START_TAG == dagster_tags.ASSET_PARTITION_RANGE_START_TAG
    assert tags.PARTITION_RANGE_END_TAG == dagster_tags.ASSET_PARTITION_RANGE_END_TAG
    assert tags.BACKFILL_TAG == dagster_tags.BACKFILL_ID_TAG
    assert tags.BACKFILL_TAGS == dagster_tags.BACKFILL_TAGS
    assert tags.STEP_SELECTION_TAG == dagster_tags.STEP_SELECTION_TAG
    assert tags.WILL_RETRY_TAG == dagster_tags.WILL_RETRY_TAG
    assert tags.AUTO_RETRY_RUN_ID_TAG == dagster_tags.AUTO_RETRY_RUN_ID_TAG
    assert tags.SENSOR_NAME_TAG == dagster_tags.SENSOR_NAME_TAG
    assert tags.SCHEDULE_NAME_TAG == dagster_tags.SCHEDULE_NAME_TAG
    assert tags.TICK_ID_TAG == dagster_tags.TICK_ID_TAG


def _run(run_id: str, root: str | None = None, **run_tags: str) -> DagsterRun:
    return DagsterRun(
        job_name="j", run_id=run_id, root_run_id=root, parent_run_id=root, tags=run_tags
    )


def test_root_run_id_of_prefers_the_field_then_the_tags_then_the_run() -> None:
    assert tags.root_run_id_of(_run("a")) == "a"
    assert tags.root_run_id_of(_run("b", root="a")) == "a"
    assert tags.root_run_id_of(_run("b", **{"dagster/root_run_id": "a"})) == "a"
    assert tags.root_run_id_of(_run("b", **{"orbit/root_run": "a"})) == "a"
    both = _run("c", root="a", **{"dagster/root_run_id": "a", "orbit/root_run": "a"})
    assert tags.root_run_id_of(both) == "a"


PARENT_TAGS = {
    "dagster/partition": "2026-11-02",
    "dagster/partition/region": "north",
    "dagster/partition_set": "job_partition_set",
    "dagster/asset_partition_range_start": "2026-11-01",
    "dagster/asset_partition_range_end": "2026-11-05",
    "dagster/backfill": "bf1",
    "dagster/root_backfill_id": "bf1",
    "dagster/parent_run_id": "p0",
    "dagster/root_run_id": "r0",
    "dagster/is_resume_retry": "true",
    "dagster/will_retry": "false",
    "dagster/failure_reason": "STEP_FAILURE",
    ".dagster/run_metrics": "true",
    "orbit/attempt": "2",
    "orbit/root_run": "r0",
    "orbit/recovery_of": "p0",
    "orbit/decided_by": "sensor",
    "orbit/restart_of": "x",
    "team": "finance",
}


def test_a_child_keeps_what_the_run_was_for_and_drops_per_run_tags() -> None:
    kept = tags.inherited_tags(PARENT_TAGS, set(dp.TAGS_TO_MAYBE_OMIT_ON_RETRY), keep_backfill=True)
    assert kept == {
        "dagster/partition": "2026-11-02",
        "dagster/partition/region": "north",
        "dagster/partition_set": "job_partition_set",
        "dagster/asset_partition_range_start": "2026-11-01",
        "dagster/asset_partition_range_end": "2026-11-05",
        "dagster/backfill": "bf1",
        "dagster/root_backfill_id": "bf1",
        "team": "finance",
    }


def test_a_child_of_a_finished_backfill_is_not_part_of_it() -> None:
    kept = tags.inherited_tags(
        PARENT_TAGS, set(dp.TAGS_TO_MAYBE_OMIT_ON_RETRY), keep_backfill=False
    )
    assert not set(kept) & tags.BACKFILL_TAGS
    assert kept["dagster/partition"] == "2026-11-02"
