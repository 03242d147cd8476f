"""``orders_import`` on the bad-input corpus: bad rows quarantined with codes, the rest loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance
from sqlalchemy import Engine, select

from orbit_examples.pipelines import example_tables as t
from orbit_pipelines_tests.pipelines.bad_input import (
    FILE_CASES,
    ROW_CASES,
    BadInput,
    assert_good_rows_loaded_and_bad_rows_quarantined,
    assert_rejected_file,
    corpus_file,
    failure_text,
)
from orbit_pipelines_tests.pipelines.jobs import orders_import


def run_import(path: Path) -> tuple[bool, str]:
    result = orders_import().execute_in_process(
        run_config={
            "ops": {
                name: {"config": {"csv_path": str(path)}}
                for name in (
                    "extract_orders",
                    "load_orders_table",
                )
            }
        },
        instance=DagsterInstance.get(),
        raise_on_error=False,
    )
    return result.success, failure_text(result.all_events)


@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: c.name)
def test_bad_rows_are_quarantined_with_codes_and_the_rest_loaded(
    case: BadInput, dagster_home: Path, engine: Engine, tmp_path: Path
) -> None:
    ok, failure = run_import(corpus_file(case.name, tmp_path))
    assert ok, failure
    assert_good_rows_loaded_and_bad_rows_quarantined(engine, case)


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.name)
def test_a_rejected_file_fails_the_run_with_its_code_and_writes_nothing(
    case: BadInput, dagster_home: Path, engine: Engine, tmp_path: Path
) -> None:
    ok, failure = run_import(corpus_file(case.name, tmp_path))

    assert not ok
    assert_rejected_file(case, failure, engine)


def test_importing_the_same_file_twice_changes_nothing(
    dagster_home: Path, engine: Engine, tmp_path: Path
) -> None:
    from orbit_examples.pipelines.sample_data import write_orders_csv

    path = write_orders_csv(tmp_path / "orders.csv", 50, bad_rows=True)
    assert run_import(path)[0] and run_import(path)[0]
    with engine.connect() as conn:
        assert len(conn.execute(select(t.orders)).all()) == 50
        codes = sorted(conn.execute(select(t.orders_quarantine.c.code)).scalars())
    assert codes == ["E-1003", "E-1003", "E-1004", "E-1006"]
