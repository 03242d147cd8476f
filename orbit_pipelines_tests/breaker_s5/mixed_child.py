"""A step the breaker kills: mixed clean and dirty rows, a stale context, normalised duplicates.

Run as ``python -m orbit_pipelines_tests.breaker_s5.mixed_child DB_URL WORKDIR ROWS BATCH``.
Row ``i`` (keys repeat as ``i``, ``float(i)`` and ``numpy.int64(i)`` later in the input):
every 3rd row emits ``{"i": i}``, every 5th row runs a transactional effect through the
context the *first* row was given (kept by the handler), every 7th an idempotent one (a
receiver that honours the key in its own autocommit session), the others record nothing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from orbit_pipelines.execution import ExecutorOptions, RowContext, RowExecutor, RunScope
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.raw_connection import connect_raw

RECEIVER_DDL = "CREATE TABLE public.receiver_s5 (effect_key text PRIMARY KEY, applied int NOT NULL)"
IDEMPOTENT_DDL = (
    "CREATE TABLE public.receiver_s5_idem (idempotency_key text PRIMARY KEY, requests int NOT NULL)"
)


def keys(rows: int) -> list[Any]:
    """The input's keys: every key once, then again as float and numpy int (duplicates)."""
    return [*range(rows), *(float(i) for i in range(0, rows, 7)), np.int64(rows - 1)]


def main(db_url: str, workdir: Path, rows: int, batch_size: int) -> None:
    """Run (or resume) the step to the end, then write WORKDIR/summary.json."""
    engine = create_store_engine(db_url)
    log = os.open(workdir / "invocations", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    kept: list[RowContext] = []
    receiver = connect_raw(engine, autocommit=True)

    def idempotent_service(idempotency_key: str) -> None:
        receiver.execute(
            "INSERT INTO public.receiver_s5_idem VALUES (%s, 1) ON CONFLICT (idempotency_key) "
            "DO UPDATE SET requests = receiver_s5_idem.requests + 1",
            (idempotency_key,),
        )

    def apply(key: str) -> Any:
        def write(conn: psycopg.Connection) -> None:
            conn.execute(
                "INSERT INTO public.receiver_s5 VALUES (%s, 1) ON CONFLICT (effect_key) "
                "DO UPDATE SET applied = receiver_s5.applied + 1",
                (key,),
            )

        return write

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        i = int(row["id"])
        os.write(log, f"{i}\n".encode())
        if not kept:
            kept.append(ctx)
        stale = kept[0]
        if stale.row_key != str(i):
            raise AssertionError(f"stale context names {stale.row_key!r} in row {i}")
        if i % 3 == 0:
            ctx.emit({"i": i})
        if i % 5 == 0:
            stale.once(f"fx-{i}", apply(f"fx-{i}"), receiver="transactional")
        if i % 7 == 0:
            ctx.once(f"idem-{i}", idempotent_service, receiver="idempotent")

    scope = RunScope("s5-root", f"run-{os.getpid()}", "rows")
    with RowExecutor(engine, scope, ExecutorOptions(batch_size=batch_size)) as ex:
        (workdir / "ready").touch()
        summary = ex.run(({"id": k} for k in keys(rows)), key="id", handler=handle)
    (workdir / "summary.json").write_text(
        json.dumps(
            {
                "done": summary.done,
                "skipped": summary.skipped_already_done,
                "duplicates": summary.duplicates,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
