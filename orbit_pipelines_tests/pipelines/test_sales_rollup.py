"""``sales_rollup``: a SIGKILL mid-step gives the crash-free totals; bad input is quarantined."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, ReexecutionOptions, execute_job, reconstructable
from sqlalchemy import Engine, delete, select

from orbit_examples.pipelines import example_tables as t
from orbit_examples.pipelines.orders_input import read_orders
from orbit_examples.pipelines.sales_rollup import expected_totals
from orbit_examples.pipelines.sample_data import write_orders_csv
from orbit_pipelines_tests.pipelines.bad_input import (
    FILE_CASES,
    ROW_CASES,
    BadInput,
    assert_good_rows_loaded_and_bad_rows_quarantined,
    assert_rejected_file,
    corpus_file,
    failure_text,
)
from orbit_pipelines_tests.pipelines.jobs import sales_rollup

Summary = dict[str, tuple[int, int, Decimal]]


def config(path: Path, **rollup: Any) -> dict[str, Any]:
    return {
        "ops": {
            "load_orders": {"config": {"csv_path": str(path)}},
            "rollup_sales": {"config": rollup},
        }
    }


def summary_table(engine: Engine) -> Summary:
    s = t.sales_summary
    with engine.connect() as conn:
        rows = conn.execute(
            select(s.c.region, s.c.order_date, s.c["items"], s.c.quantity, s.c.revenue)
        )
        return {f"{r[0]}|{r[1].isoformat()}": (r[2], r[3], r[4]) for r in rows}


def oracle(path: Path) -> Summary:
    """Totals computed in plain Python from the valid orders, independently of the job."""
    totals = expected_totals([o.as_json() for o in read_orders(path).orders])
    return {
        g: (v["items"], v["quantity"], Decimal(v["revenue_cents"]) / 100) for g, v in totals.items()
    }


def test_sigkill_mid_rollup_then_reexecution_gives_the_crash_free_totals(
    dagster_home: Path, engine: Engine, tmp_path: Path
) -> None:
    path = write_orders_csv(tmp_path / "orders.csv", 300, bad_rows=True)
    instance = DagsterInstance.get()

    clean = sales_rollup().execute_in_process(
        run_config=config(path, batch_size=40), instance=instance
    )
    assert clean.success
    crash_free = summary_table(engine)
    assert crash_free == oracle(path)
    with engine.begin() as conn:
        conn.execute(delete(t.sales_summary))

    # 130 rows: three batches of 40 committed, ten rows (and their tokens) in flight.
    killed_config = config(path, batch_size=40, kill_after_rows=130)
    with execute_job(reconstructable(sales_rollup), instance, run_config=killed_config) as first:
        assert not first.success
        first_id = first.run_id
    assert summary_table(engine) == {}
    with execute_job(
        reconstructable(sales_rollup),
        instance,
        run_config=killed_config,
        reexecution_options=ReexecutionOptions.from_failure(first_id, instance),
    ) as second:
        assert second.success
        rollup_meta = {
            k: v.value
            for event in second.all_events
            if event.is_step_success is False
            and event.step_key == "rollup_sales"
            and event.event_type_value == "STEP_OUTPUT"
            for k, v in event.step_output_data.metadata.items()
        }

    assert summary_table(engine) == crash_free
    assert rollup_meta["rows_skipped_already_done"] == 120
    assert rollup_meta["rows_done"] == 180


@pytest.mark.parametrize("case", ROW_CASES + FILE_CASES, ids=lambda c: c.name)
def test_bad_input_rolls_up_the_good_rows_only(
    case: BadInput, dagster_home: Path, engine: Engine, tmp_path: Path
) -> None:
    path = corpus_file(case.name, tmp_path)
    result = sales_rollup().execute_in_process(
        run_config=config(path), instance=DagsterInstance.get(), raise_on_error=False
    )

    if case.file_error:
        assert not result.success
        assert_rejected_file(case, failure_text(result.all_events), engine)
        return
    assert result.success, failure_text(result.all_events)
    assert summary_table(engine) == oracle(path)
    assert sum(items for items, _, _ in summary_table(engine).values()) > 0
    assert_good_rows_loaded_and_bad_rows_quarantined(engine, case)
