"""An op job whose step uses ``run_frames``, for crash tests (importable by step processes).

The frame handler writes each chunk's rows through ``fctx.conn`` and, on the first attempt,
SIGKILLs its own process right after writing chunk ``KILL_CHUNK`` (before that chunk commits).

No ``from __future__ import annotations``: Dagster inspects the op signatures.
"""

import os
import signal

import pandas as pd
from dagster import Definitions, EnvVar, JobDefinition, OpExecutionContext, job, op

from orbit_pipelines import (
    ExecutorOptions,
    FrameContext,
    OrbitStore,
    PostgresCheckpointIOManager,
    Sum,
    run_frames,
)

ROWS = 47
BATCH = 10
KILL_CHUNK = 2


def _first_attempt(context: OpExecutionContext) -> bool:
    return context.run.parent_run_id is None


@op
def price_frame(context: OpExecutionContext, orbit_store: OrbitStore) -> float:
    """Net prices of ROWS rows, vectorized per chunk of BATCH."""
    frame = pd.DataFrame({"id": range(ROWS), "gross": [float(i) for i in range(ROWS)]})
    first = _first_attempt(context)

    def price(chunk: pd.DataFrame, fctx: FrameContext) -> pd.DataFrame:
        with fctx.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO frame_writes (id, run_id) VALUES (%s, %s)",
                [(int(i), context.run_id) for i in chunk["id"]],
            )
        if first and fctx.chunk_no == KILL_CHUNK:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-frame: written, not committed
        return pd.DataFrame({"net": chunk["gross"] * 0.5}, index=chunk.index)

    summary = run_frames(
        context,
        frame,
        key="id",
        handler=price,
        aggregations={"net": Sum()},
        options=ExecutorOptions(batch_size=BATCH),
    )
    return summary.aggregations["net"]


@job
def frame_job() -> None:
    price_frame()


_store = OrbitStore(postgres_url=EnvVar("ORBIT_POSTGRES_URL"))
defs = Definitions(
    jobs=[frame_job],
    resources={"orbit_store": _store, "io_manager": PostgresCheckpointIOManager(store=_store)},
)


def bound_frame_job() -> JobDefinition:
    """``frame_job`` with its resources (a reconstructable target for execute_job)."""
    return defs.get_job_def("frame_job")
