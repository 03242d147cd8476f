"""The mapped steps Dagster's from-failure list misses (the end-to-end case, a run worker
SIGKILLed before every shard started, is ``chaos/test_unstarted_shards.py``)."""

from __future__ import annotations

from orbit_pipelines.recovery.unstarted_steps import missing_mapped_steps

# load → shard (dynamic) → ship[?] → report (fan-in), and a second mapped step after ship.
DEPS = {
    "load_orders": set(),
    "shard_orders": {"load_orders"},
    "ship_shard[?]": {"shard_orders"},
    "confirm[?]": {"ship_shard[?]"},
    "shipping_report": {"confirm[?]"},
}
MAPPINGS = {"shard_orders": {"result": ["shard_0", "shard_1", "shard_2"]}}


def test_never_started_shards_and_their_downstream_are_added() -> None:
    # Dagster's list after a kill while shard_0 ran and shards 1, 2 waited:
    selected = ["ship_shard[shard_0]", "confirm[shard_0]", "shipping_report"]
    finished = {"load_orders", "shard_orders"}
    assert missing_mapped_steps(DEPS, MAPPINGS, finished, selected) == [
        "confirm[shard_1]",
        "confirm[shard_2]",
        "ship_shard[shard_1]",
        "ship_shard[shard_2]",
    ]


def test_shards_finished_in_any_run_of_the_group_are_not_rerun() -> None:
    finished = {"load_orders", "shard_orders", "ship_shard[shard_1]", "confirm[shard_1]"}
    assert missing_mapped_steps(DEPS, MAPPINGS, finished, ["ship_shard[shard_0]"]) == [
        "confirm[shard_0]",
        "confirm[shard_2]",
        "ship_shard[shard_2]",
        "shipping_report",
    ]


def test_nothing_missing_changes_nothing() -> None:
    finished = {"load_orders", "shard_orders", "ship_shard[shard_1]", "confirm[shard_1]"}
    selected = [
        "ship_shard[shard_0]",
        "ship_shard[shard_2]",
        "confirm[shard_0]",
        "confirm[shard_2]",
        "shipping_report",
    ]
    assert missing_mapped_steps(DEPS, MAPPINGS, finished, selected) == []
    # A dynamic step that has not produced its mappings yet resolves nothing.
    assert missing_mapped_steps(DEPS, {}, set(), ["load_orders"]) == []
