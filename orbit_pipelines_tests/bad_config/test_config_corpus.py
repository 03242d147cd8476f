"""Broken configuration, each with the error code and message it must produce, and proof
that it failed before the first side effect (no shipment at the carrier, no row written).

The input-file corpus (bad CSVs) lives with the jobs' tests in ``pipelines/bad_input.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterEvent, DagsterInstance
from sqlalchemy import Engine, func, select

from orbit_examples.carrier import storage as carrier_tables
from orbit_examples.carrier.resource import CARRIER_TOKEN_ENV, CARRIER_URL_ENV
from orbit_examples.definitions import defs
from orbit_examples.pipelines.sample_data import write_orders_csv
from orbit_pipelines.store import tables as orbit_tables
from orbit_pipelines.store.urls import POSTGRES_URL_ENV
from orbit_pipelines_tests.carrier.running import TOKEN, RunningCarrier, start_carrier
from orbit_pipelines_tests.processes import ChildProcesses

ORDERS = 12


@dataclass(frozen=True)
class BadConfig:
    """One broken setting: how to break it, and what the failure must say."""

    name: str
    job: str  # "shipments" or "sales_rollup"
    breaks: Callable[[pytest.MonkeyPatch, dict[str, object]], None]
    code: str | None  # our error code; None where Dagster itself rejects the config
    says: str  # a fragment the failure message must contain
    secret: str | None = None  # a value that must not appear anywhere in the failure


def _env(name: str, value: str | None) -> Callable[[pytest.MonkeyPatch, dict[str, object]], None]:
    def apply(monkeypatch: pytest.MonkeyPatch, _config: dict[str, object]) -> None:
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)

    return apply


def _op_config(
    op: str, **values: object
) -> Callable[[pytest.MonkeyPatch, dict[str, object]], None]:
    def apply(_monkeypatch: pytest.MonkeyPatch, config: dict[str, object]) -> None:
        ops = config["ops"]
        assert isinstance(ops, dict)
        ops.setdefault(op, {"config": {}})["config"].update(values)

    return apply


WRONG_TOKEN = "wrong-token-do-not-print"
CASES = (
    BadConfig(
        "carrier_token_wrong",
        "shipments",
        _env(CARRIER_TOKEN_ENV, WRONG_TOKEN),
        "E-5001",
        "wrong bearer token",
        secret=WRONG_TOKEN,
    ),
    BadConfig(
        "carrier_token_unset", "shipments", _env(CARRIER_TOKEN_ENV, None), None, CARRIER_TOKEN_ENV
    ),
    BadConfig("carrier_token_blank", "shipments", _env(CARRIER_TOKEN_ENV, "  "), "E-2008", "token"),
    BadConfig(
        "carrier_url_without_scheme",
        "shipments",
        _env(CARRIER_URL_ENV, "127.0.0.1:8765"),
        "E-2008",
        "not an http(s) URL",
    ),
    BadConfig(
        "postgres_url_malformed",
        "sales_rollup",
        _env(POSTGRES_URL_ENV, "postgresql://orbit:hunter2@db:port/orbit"),
        "E-2007",
        "not a database URL",
        secret="hunter2",
    ),
    BadConfig(
        "postgres_host_unknown",
        "sales_rollup",
        _env(POSTGRES_URL_ENV, "postgresql://orbit:hunter2@no-such-host.invalid:5432/orbit"),
        "E-2001",
        "no-such-host.invalid",
        secret="hunter2",
    ),
    BadConfig("shards_zero", "shipments", _op_config("shard_orders", shards=0), None, "shards"),
    BadConfig(
        "batch_size_negative",
        "sales_rollup",
        _op_config("rollup_sales", batch_size=-5),
        None,
        "batch_size",
    ),
)


def failure_messages(events: list[DagsterEvent]) -> str:
    """Every failure the run reported (step, resource init, run), causes included."""
    lines: list[str] = []
    for event in events:
        if not (event.is_failure or event.is_resource_init_failure or event.is_run_failure):
            continue
        lines.append(event.message or "")
        error = getattr(event.event_specific_data, "error", None)
        while error is not None:
            lines.append(error.message)
            error = error.cause
    return "\n".join(lines)


@pytest.fixture
def carrier(
    children: ChildProcesses, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> RunningCarrier:
    running = start_carrier(children, db_url, tmp_path / "carrier")
    monkeypatch.setenv(CARRIER_URL_ENV, running.url)
    monkeypatch.setenv(CARRIER_TOKEN_ENV, TOKEN)
    return running


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_config_fails_with_its_code_before_the_first_side_effect(
    case: BadConfig,
    dagster_home: Path,
    engine: Engine,
    carrier: RunningCarrier,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    csv_path = write_orders_csv(tmp_path / "orders.csv", ORDERS)
    config: dict[str, object] = {"ops": {"load_orders": {"config": {"csv_path": str(csv_path)}}}}
    # The instance reads the database URL now; the break applies to the job's resources.
    instance = DagsterInstance.get()
    case.breaks(monkeypatch, config)
    # The jobs carry no resources: the code location binds them once.
    job = defs.get_job_def(case.job)

    try:
        result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
        assert not result.success, f"{case.name}: the run must fail"
        message = failure_messages(result.all_events)
    except Exception as error:  # Dagster rejects some run config before the run starts
        message = str(error)

    assert case.says in message, message
    if case.code is not None:
        assert case.code in message, message
    if case.secret is not None:
        assert case.secret not in message
    # Nothing happened outside: no shipment at the carrier, no row checkpointed as done.
    assert _count(engine, carrier_tables.shipments) == 0
    with engine.connect() as conn:
        done = conn.execute(
            select(func.count()).where(orbit_tables.row_outcomes.c.status == "done")
        ).scalar_one()
        quarantined = conn.execute(
            select(func.count()).where(orbit_tables.row_outcomes.c.status == "quarantined")
        ).scalar_one()
    assert done == 0, f"{case.name}: {done} rows were processed with a broken config"
    assert quarantined == 0, f"{case.name}: good rows were quarantined for a config error"
