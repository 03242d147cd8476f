"""The step the crash test kills: 10,000 rows, effects and two aggregations per row.

Run as ``python -m orbit_pipelines_tests.execution.crash_child DB_URL WORKDIR ROWS BATCH``.
Every handler call is appended to WORKDIR/invocations (outside any transaction, so the
parent sees work that a kill threw away); WORKDIR/ready appears when rows start.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import psycopg

from orbit_pipelines.execution import Count, ExecutorOptions, RowContext, RowExecutor, RunScope, Sum
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.raw_connection import connect_raw

IDEMPOTENT_EVERY = 10
RECEIVER_DDL = """
CREATE TABLE public.receiver_tx (effect_key text PRIMARY KEY, applied int NOT NULL);
CREATE TABLE public.receiver_idem (
    idempotency_key text PRIMARY KEY, applied int NOT NULL, requests int NOT NULL
);
"""


def main(db_url: str, workdir: Path, rows: int, batch_size: int) -> None:
    """Run (or resume) the step to the end, then write WORKDIR/summary.json."""
    engine = create_store_engine(db_url)
    receiver = connect_raw(engine, autocommit=True)  # the "remote" idempotent service
    log = os.open(workdir / "invocations", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def apply_tx(key: str) -> Any:
        def write(conn: psycopg.Connection) -> None:
            conn.execute(
                "INSERT INTO public.receiver_tx VALUES (%s, 1) ON CONFLICT (effect_key) "
                "DO UPDATE SET applied = receiver_tx.applied + 1",
                (key,),
            )

        return write

    def idempotent_service(idempotency_key: str) -> str:
        # Honours the key: a repeat is counted as a request but not applied again.
        receiver.execute(
            "INSERT INTO public.receiver_idem VALUES (%s, 1, 1) ON CONFLICT (idempotency_key) "
            "DO UPDATE SET requests = receiver_idem.requests + 1",
            (idempotency_key,),
        )
        return "ok"

    def handle(row: dict[str, int], ctx: RowContext) -> None:
        os.write(log, f"{row['id']}\n".encode())
        ctx.once(f"tx-{row['id']}", apply_tx(f"tx-{row['id']}"), receiver="transactional")
        if row["id"] % IDEMPOTENT_EVERY == 0:
            # Every 10th row: each call costs two durable ledger commits plus the receiver's.
            ctx.once(f"idem-{row['id']}", idempotent_service, receiver="idempotent")
        ctx.agg["sum"].add(row["id"])
        ctx.agg["count"].add()

    scope = RunScope("crash-root", f"run-{os.getpid()}", "rows")
    options = ExecutorOptions(batch_size=batch_size, on_error="fail_fast")
    with RowExecutor(engine, scope, options) as ex:
        (workdir / "ready").touch()
        summary = ex.run(
            ({"id": i} for i in range(rows)),
            key="id",
            handler=handle,
            aggregations={"sum": Sum(), "count": Count()},
        )
    (workdir / "summary.json").write_text(
        json.dumps(
            {
                "done": summary.done,
                "skipped": summary.skipped_already_done,
                "aggregations": summary.aggregations,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
