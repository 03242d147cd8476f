"""``orders_import``: extract (CSV) → transform (pandas validation + quarantine) → load (upsert).

Every step output is a DataFrame stored by the checkpoint IO manager, so a re-execution
after a crash in ``load`` reuses the validated frames instead of reading the file again.

- ``extract_orders`` streams the CSV with ``orders_input.read_records``: whole-file errors
  (E-1005 empty, E-1002 missing column) fail the run before anything is written; records
  that are not even well formed (E-1001, E-1006, E-1007) arrive already marked.
- ``transform_orders`` validates with pandas (empty fields, dates, items, duplicated ids)
  and splits the frame into ``valid`` and ``quarantined`` (each with code and reason).
- ``load_orders_table`` upserts the valid orders into ``orbit_examples.orders`` and the
  rejects into ``orbit_examples.orders_quarantine`` in one transaction: running it twice
  changes nothing. Its ``kill_after_rows`` (off by default) SIGKILLs the step's process
  with that transaction open, first attempt only, for the demo and the recovery tests.

No ``from __future__ import annotations``: Dagster reads the op annotations.
"""

import json
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import Config, MetadataValue, OpExecutionContext, Out, Output, job, op
from pydantic import Field

from orbit_examples.errors import E1004_DUPLICATE_KEY
from orbit_examples.pipelines import example_tables
from orbit_examples.pipelines.orders_input import (
    REQUIRED_COLUMNS,
    Order,
    ParsedOrders,
    RejectedRow,
    RowInvalid,
    duplicate_reason,
    file_digest,
    read_records,
    validate_values,
)
from orbit_examples.pipelines.step_scope import KillSwitch, is_first_attempt
from orbit_pipelines import OrbitStore

QUARANTINE_COLUMNS = ["line", "raw", "code", "reason", "order_id"]


class ImportConfig(Config):
    """Which file to import."""

    csv_path: str = Field(description="Path of the orders CSV (see orders_input for its schema).")


class LoadConfig(ImportConfig):
    """The file, and the demo/test fault injection of the load step."""

    kill_after_rows: int | None = Field(
        default=None,
        ge=1,
        description="Fault injection: SIGKILL the load step's process after upserting this "
        "many orders, inside the open transaction, first attempt only. Off by default.",
    )


def _strings(values: list[Any]) -> pd.Series:
    return pd.Series(values, dtype="string")


@op(description="Reads the orders CSV into a frame of text values; malformed records are marked.")
def extract_orders(context: OpExecutionContext, config: ImportConfig) -> pd.DataFrame:
    """One frame row per CSV record; ``code``/``reason`` set where the record is unusable."""
    records = list(read_records(config.csv_path))
    columns: dict[str, Any] = {"line": pd.Series([r.line for r in records], dtype="int64")}
    for name in REQUIRED_COLUMNS:
        columns[name] = _strings([r.values[name] if r.values else None for r in records])
    columns["raw"] = _strings([r.raw for r in records])
    columns["code"] = _strings([r.code for r in records])
    columns["reason"] = _strings([r.reason for r in records])
    columns["record_order_id"] = _strings([r.order_id for r in records])
    frame = pd.DataFrame(columns)
    context.add_output_metadata(
        {"records": len(frame), "source_sha256": file_digest(Path(config.csv_path))}
    )
    return frame


@op(
    description="Validates the records with pandas; splits them into valid and quarantined.",
    out={"valid": Out(pd.DataFrame), "quarantined": Out(pd.DataFrame)},
)
def transform_orders(context: OpExecutionContext, records: pd.DataFrame) -> Any:
    """Valid orders (one row each, items as JSON text) and quarantined rows with reasons."""
    frame = records.copy()
    problems = frame["code"].notna()

    # Vectorized first: a required field that is blank.
    for name in REQUIRED_COLUMNS:
        blank = ~problems & frame[name].fillna("").str.strip().eq("")
        frame.loc[blank, "code"] = "E-1003"
        frame.loc[blank, "reason"] = f"{name} is empty"
        problems |= blank

    # Then the values that need a grammar (dates, items): one shared validator.
    parsed: dict[int, Order] = {}
    for position in frame.index[~problems]:
        row = frame.loc[position]
        try:
            parsed[position] = validate_values(
                {name: str(row[name]) for name in REQUIRED_COLUMNS}, int(row["line"])
            )
        except RowInvalid as invalid:
            frame.loc[position, "code"] = invalid.code
            frame.loc[position, "reason"] = invalid.reason
            problems.loc[position] = True

    # Duplicated ids among the valid rows: the first (lowest line) wins.
    ids = frame["order_id"].str.strip()
    duplicated = ~problems & ids.where(~problems).duplicated(keep="first")
    first_line = frame.loc[~problems].groupby(ids[~problems])["line"].min()
    for position in frame.index[duplicated]:
        order_id = ids[position]
        frame.loc[position, "code"] = E1004_DUPLICATE_KEY.code
        frame.loc[position, "reason"] = duplicate_reason(order_id, int(first_line[order_id]))
    problems |= duplicated

    valid = pd.DataFrame(
        [parsed[p].as_json() for p in frame.index[~problems]],
        columns=["order_id", "customer", "address", "region", "order_date", "items", "line"],
    )
    valid["items"] = valid["items"].map(_items_json)
    quarantined = frame.loc[problems, ["line", "raw", "code", "reason"]].copy()
    quarantined["order_id"] = frame.loc[problems, "record_order_id"]
    quarantined = quarantined.reset_index(drop=True)
    by_code = {str(code): int(n) for code, n in quarantined["code"].value_counts().items()}
    context.log.info(f"{len(valid)} valid, {len(quarantined)} quarantined {by_code}")
    yield Output(valid, "valid", metadata={"rows": len(valid)})
    yield Output(
        quarantined,
        "quarantined",
        metadata={"rows": len(quarantined), "by_code": MetadataValue.json(by_code)},
    )


def _items_json(items: Any) -> str:
    return json.dumps(items, sort_keys=True)


@op(description="Upserts valid orders and quarantined rows into orbit_examples, atomically.")
def load_orders_table(
    context: OpExecutionContext,
    config: LoadConfig,
    orbit_store: OrbitStore,
    valid: pd.DataFrame,
    quarantined: pd.DataFrame,
) -> dict:
    """Load both frames in one transaction; return the counts."""
    parsed = ParsedOrders(source=config.csv_path, digest=file_digest(Path(config.csv_path)))
    parsed.orders = [_order_from_row(row) for row in valid.to_dict("records")]
    parsed.rejects = [
        RejectedRow(
            line=int(row["line"]),
            raw=str(row["raw"]),
            code=str(row["code"]),
            reason=str(row["reason"]),
            order_id=None if pd.isna(row["order_id"]) else str(row["order_id"]),
        )
        for row in quarantined.to_dict("records")
    ]
    if config.kill_after_rows is not None and is_first_attempt(context.run):
        kill = KillSwitch(context, config.kill_after_rows)
        loaded, rejected = _load_with_kill(orbit_store, parsed, kill)
    else:
        loaded, rejected = example_tables.load_parsed(orbit_store.engine, parsed)
    context.add_output_metadata({"orders_upserted": loaded, "rows_quarantined": rejected})
    return {"orders_upserted": loaded, "rows_quarantined": rejected}


def _load_with_kill(store: OrbitStore, parsed: ParsedOrders, kill: KillSwitch) -> tuple[int, int]:
    """``load_parsed``, one order at a time so the kill lands mid-transaction: the crash must
    leave no order behind (Postgres rolls the transaction back) and the recovery loads all."""
    example_tables.ensure_tables(store.engine)
    with store.engine.begin() as conn:
        for order in parsed.orders:
            example_tables.upsert_orders(conn, [order], source_digest=parsed.digest)
            kill.tick()
        rejected = example_tables.quarantine_rows(
            conn, parsed.rejects, source=parsed.source, source_digest=parsed.digest
        )
    return len(parsed.orders), rejected


def _order_from_row(row: dict[Any, Any]) -> Order:
    data = {str(k): v for k, v in row.items()}
    data["items"] = json.loads(data["items"])
    return Order.from_json(data)


@job(
    description="Imports an orders CSV: validate with pandas, quarantine bad rows, upsert.",
)
def orders_import() -> None:
    """extract → transform → load."""
    valid, quarantined = transform_orders(extract_orders())
    load_orders_table(valid, quarantined)
