"""Module-level jobs for the IO manager tests (reconstructable, loadable by step subprocesses).

Every op records its calls in ``public.io_test_calls`` (created by the tests): the
multiprocess executor runs ops in other processes, so an in-memory counter would see nothing.
No ``from __future__ import annotations`` here: Dagster reads the op annotations.
"""

from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    Config,
    DynamicOut,
    DynamicOutput,
    EnvVar,
    OpExecutionContext,
    in_process_executor,
    job,
    multiprocess_executor,
    op,
)
from sqlalchemy import text

from orbit_pipelines.dagster_io.io_manager import PostgresCheckpointIOManager
from orbit_pipelines.dagster_io.resources import OrbitStore

CALLS_DDL = (
    "CREATE TABLE IF NOT EXISTS public.io_test_calls (step text NOT NULL, run_id text NOT NULL)"
)


def _store() -> OrbitStore:
    return OrbitStore(postgres_url=EnvVar("ORBIT_POSTGRES_URL"))


def _resources(**io_config: Any) -> dict[str, Any]:
    store = _store()
    return {
        "orbit_store": store,
        "io_manager": PostgresCheckpointIOManager(store=store, **io_config),
    }


def _record_call(context: OpExecutionContext, store: OrbitStore) -> int:
    """Record this call; return how many calls this step has had (this one included)."""
    with store.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO public.io_test_calls (step, run_id) VALUES (:step, :run)"),
            {"step": context.op.name, "run": context.run_id},
        )
        return int(
            conn.execute(
                text("SELECT count(*) FROM public.io_test_calls WHERE step = :step"),
                {"step": context.op.name},
            ).scalar_one()
        )


def sample_frame() -> pd.DataFrame:
    """A DataFrame with every dtype the round trip must keep, and a named index."""
    index = pd.Index([101, 102, 103, 104], name="shipment_id")
    return pd.DataFrame(
        {
            "qty": np.array([1, 2, 3, 4], dtype="int64"),
            "weight": [1.5, 2.25, np.nan, 4.0],
            "carrier": pd.Series(["dhl", "ups", None, "fedex"], dtype="str", index=index),
            "note": pd.array(["a", None, "c", "d"], dtype="string"),
            "shipped_at": pd.date_range(
                "2026-01-01 08:00", periods=4, freq="h", tz="Europe/Berlin"
            ),
            "status": pd.Categorical(
                ["new", "sent", "new", "lost"], categories=["new", "sent", "lost"], ordered=True
            ),
            "pieces": pd.array([1, None, 3, 4], dtype="Int64"),
            "insured": pd.array([True, None, False, True], dtype="boolean"),
        },
        index=index,
    )


def _extract(context: OpExecutionContext, orbit_store: OrbitStore) -> pd.DataFrame:
    _record_call(context, orbit_store)
    return sample_frame()


@op(code_version="1")
def extract(context: OpExecutionContext, orbit_store: OrbitStore) -> pd.DataFrame:
    """The source step; its body counts its calls."""
    return _extract(context, orbit_store)


@op(name="extract", code_version="2")
def extract_v2(context: OpExecutionContext, orbit_store: OrbitStore) -> pd.DataFrame:
    """The same step after a code change (code_version 2)."""
    return _extract(context, orbit_store)


class TransformConfig(Config):
    """How many of its first calls fail (counted over the whole test database)."""

    fail_times: int = 0


@op
def transform(
    context: OpExecutionContext,
    config: TransformConfig,
    orbit_store: OrbitStore,
    frame: pd.DataFrame,
) -> pd.DataFrame:
    """Fails on its first ``fail_times`` calls, then adds a column."""
    calls = _record_call(context, orbit_store)
    if calls <= config.fail_times:
        raise RuntimeError(f"transform fails on purpose (call {calls} of {config.fail_times})")
    out = frame.copy()
    out["total"] = out["qty"] * 10
    return out


@op
def load(context: OpExecutionContext, orbit_store: OrbitStore, frame: pd.DataFrame) -> dict:
    """Summarises the frame as plain JSON."""
    _record_call(context, orbit_store)
    return {"rows": len(frame), "total": int(frame["total"].sum()), "carriers": 3}


@job(name="checkpoint_etl", resource_defs=_resources(), executor_def=in_process_executor)
def etl_job() -> None:
    """extract → transform → load, in one process."""
    load(transform(extract()))


@job(name="checkpoint_etl", resource_defs=_resources(), executor_def=in_process_executor)
def etl_job_v2() -> None:
    """The same job after extract's code version changed."""
    load(transform(extract_v2()))


@job(
    name="checkpoint_etl_mp",
    resource_defs=_resources(),
    executor_def=multiprocess_executor.configured({"max_concurrent": 2}),
)
def etl_job_multiprocess() -> None:
    """extract → transform → load, each step in its own process."""
    load(transform(extract()))


@op(out=DynamicOut(dict))
def fan_out(context: OpExecutionContext, orbit_store: OrbitStore):  # type: ignore[no-untyped-def]
    """Three shards, one dynamic output each."""
    _record_call(context, orbit_store)
    for shard in ("a", "b", "c"):
        yield DynamicOutput({"shard": shard, "n": ord(shard)}, mapping_key=shard)


class GateConfig(Config):
    """Shard that fails on its first call."""

    fail_shard: str = ""


@op
def work_shard(
    context: OpExecutionContext, config: GateConfig, orbit_store: OrbitStore, item: dict
) -> dict:
    """One shard; the configured one fails on its first call."""
    calls = _record_call(context, orbit_store)
    if item["shard"] == config.fail_shard and calls <= 3:
        raise RuntimeError(f"shard {item['shard']} fails on purpose")
    return {"shard": item["shard"], "double": item["n"] * 2}


@op
def merge(context: OpExecutionContext, orbit_store: OrbitStore, items: list) -> list:
    """Collects the shards in key order."""
    _record_call(context, orbit_store)
    return sorted(items, key=lambda item: item["shard"])


@job(name="checkpoint_dynamic", resource_defs=_resources(), executor_def=in_process_executor)
def dynamic_job() -> None:
    """fan_out → work_shard per shard → merge."""
    merge(fan_out().map(work_shard).collect())


class Opaque:
    """A value that only pickle can store."""

    def __init__(self, value: int) -> None:
        self.value = value


@op
def make_opaque() -> Opaque:
    """Returns a custom object."""
    return Opaque(7)


@op
def read_opaque(item: Opaque) -> int:
    """Reads it back."""
    return item.value


@job(name="checkpoint_no_pickle", resource_defs=_resources(), executor_def=in_process_executor)
def no_pickle_job() -> None:
    """A custom object with pickle off (the default): storing it fails clearly."""
    read_opaque(make_opaque())


@job(
    name="checkpoint_pickle",
    resource_defs=_resources(allow_pickle=True),
    executor_def=in_process_executor,
)
def pickle_job() -> None:
    """The same with allow_pickle turned on for this job."""
    read_opaque(make_opaque())
