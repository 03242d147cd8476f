"""``orders_import`` on the bad-input corpus: bad rows quarantined with codes, the rest loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance
from sqlalchemy import Engine, inspect, select

from orbit_pipelines.pipelines import example_tables as t
from orbit_pipelines.pipelines.orders_import import orders_import
from orbit_pipelines_tests.pipelines.bad_input import (
    FILE_CASES,
    ROW_CASES,
    BadInput,
    corpus_file,
    failure_text,
)


def run_import(path: Path) -> tuple[bool, str]:
    result = orders_import.execute_in_process(
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

    with engine.connect() as conn:
        loaded = conn.execute(select(t.orders.c.order_id).order_by(t.orders.c.order_id)).scalars()
        rejects = conn.execute(
            select(
                t.orders_quarantine.c.line, t.orders_quarantine.c.code, t.orders_quarantine.c.reason
            )
        ).all()
        assert tuple(loaded) == case.good_ids
    assert tuple((r.line, r.code) for r in rejects) == case.rejects
    assert all(r.reason for r in rejects)


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.name)
def test_a_rejected_file_fails_the_run_with_its_code_and_writes_nothing(
    case: BadInput, dagster_home: Path, engine: Engine, tmp_path: Path
) -> None:
    ok, failure = run_import(corpus_file(case.name, tmp_path))

    assert not ok
    assert case.file_error is not None and case.file_error in failure
    assert "orbit_examples" not in inspect(engine).get_schema_names()


def test_importing_the_same_file_twice_changes_nothing(
    dagster_home: Path, engine: Engine, tmp_path: Path
) -> None:
    from orbit_pipelines.pipelines.sample_data import write_orders_csv

    path = write_orders_csv(tmp_path / "orders.csv", 50, bad_rows=True)
    assert run_import(path)[0] and run_import(path)[0]
    with engine.connect() as conn:
        assert len(conn.execute(select(t.orders)).all()) == 50
        codes = sorted(conn.execute(select(t.orders_quarantine.c.code)).scalars())
    assert codes == ["E-1003", "E-1003", "E-1004", "E-1006"]
