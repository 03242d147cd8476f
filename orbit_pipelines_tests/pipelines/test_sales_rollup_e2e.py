"""``sales_rollup`` end to end: the rollup SIGKILLed mid-step under a real daemon, recovered by
the real recovery sensor; the summary equals the crash-free totals."""

from __future__ import annotations

from pathlib import Path

import pytest

from orbit_examples.pipelines.sample_data import write_orders_csv
from orbit_pipelines_tests.pipelines.location_harness import CRASH, LocationHarness
from orbit_pipelines_tests.pipelines.test_sales_rollup import config, oracle, summary_table

ORDERS, BATCH, KILL_AFTER = 120, 20, 50
STEP = "rollup_sales"


@pytest.mark.e2e
def test_rollup_killed_mid_step_is_recovered_by_the_sensor_with_crash_free_totals(
    location: LocationHarness, tmp_path: Path
) -> None:
    path = write_orders_csv(tmp_path / "orders.csv", ORDERS, bad_rows=True)
    location.start_daemon()
    root = location.launch_job(
        "sales_rollup", config(path, batch_size=BATCH, kill_after_rows=KILL_AFTER)
    )

    child = location.recovered(root)
    print(f"\n{location.timeline(root, child.run_id)}")

    # One recovery run, of the rollup and what follows it; the load was not run again.
    assert location.steps_failed(root) == [STEP]
    assert location.failures(root) == [CRASH]
    assert location.steps_started(root) == ["load_orders", STEP]
    assert sorted(child.step_keys_to_execute or []) == [STEP, "write_sales_summary"]
    assert location.steps_started(child.run_id) == [STEP, "write_sales_summary"]

    # Totals: exactly a crash-free computation's (plain Python over the valid orders).
    assert summary_table(location.engine) == oracle(path)

    # Rows: the killed run's committed batches were skipped, so at most the one batch that
    # was in flight was redone, and no committed row was committed again.
    committed = location.rows_committed(root, STEP)
    assert committed[root] == (KILL_AFTER // BATCH) * BATCH
    redone = KILL_AFTER - committed[root]
    assert 0 <= redone <= BATCH
    assert committed[child.run_id] == ORDERS - committed[root]
    assert location.rows_recommitted(root, STEP) == 0
    rerun = location.output_metadata(child.run_id, STEP)
    assert rerun["rows_skipped_already_done"] == committed[root]
    assert rerun["rows_done"] == ORDERS - committed[root]
    print(f"\nrows redone after the kill: {redone} (batch {BATCH})")
