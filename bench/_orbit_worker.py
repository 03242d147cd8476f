"""System (a): orbit_pipelines. The same Dagster job shape as (b), its op running the rows
through orbit's ``run_rows`` (the Dagster helper around ``RowExecutor``); recovery is the
same re-execution from failure.

``run_rows`` keys the row ledger by the Dagster run group's root run id, so the
re-execution finds the rows its parent committed and skips them. The effect is delivered
through ``ctx.once``:

- ``transactional`` (default): the receiver table lives in the same Postgres database, so
  the INSERT runs inside the executor's batch transaction, together with the row statuses
  and the ledger entry: it commits with them or not at all;
- ``unsafe``: the INSERT is an autocommitted call outside any orbit transaction (like an
  HTTP call, and like a DBOS step); orbit records the intent first, and after a crash asks
  a ``reconcile`` callback (which looks the key up at the receiver) instead of repeating it.

Run as a script (the harness sets the environment, see ``_row_work``, plus
``BENCH_ORBIT_RECEIVER`` and ``BENCH_ORBIT_BATCH_SIZE``):

    python bench/_orbit_worker.py init     create Dagster's tables in the bench database
    python bench/_orbit_worker.py run
    python bench/_orbit_worker.py reexecute PARENT_RUN_ID

It prints one JSON line: run id, success, seconds spent in ``execute_job``.
"""

# No `from __future__ import annotations`: Dagster rejects string annotations on op contexts.
import json
import os
import sys
import time
from typing import Any

import psycopg
from _row_work import AFTER_EFFECT, BEFORE_EFFECT, INSERT_EFFECT, RowWork, row_key
from dagster import (
    DagsterInstance,
    OpExecutionContext,
    ReexecutionOptions,
    execute_job,
    job,
    op,
    reconstructable,
)

from orbit_pipelines.dagster_io.row_steps import run_rows
from orbit_pipelines.execution import ExecutorOptions, Reconciled, RowContext
from orbit_pipelines.store.engine import create_store_engine

RECEIVER_ENV = "BENCH_ORBIT_RECEIVER"
BATCH_SIZE_ENV = "BENCH_ORBIT_BATCH_SIZE"


def _handler(work: RowWork, receiver: str) -> Any:
    scenario = work.settings.scenario

    def deliver_in_batch(conn: psycopg.Connection, key: str) -> None:
        conn.execute(INSERT_EFFECT, (scenario, key))

    def reconcile(key: str) -> Reconciled:
        # Ask the receiver whether the effect arrived before the crash.
        return Reconciled.succeeded() if work.was_delivered(key) else Reconciled.failed()

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        index = row["index"]
        key = row["key"]
        work.record_invocation(index)
        work.maybe_die(index, BEFORE_EFFECT)
        if receiver == "transactional":
            ctx.once(key, lambda conn: deliver_in_batch(conn, key), receiver="transactional")
        else:
            ctx.once(key, lambda: work.send_effect(index), receiver="unsafe", reconcile=reconcile)
        work.maybe_die(index, AFTER_EFFECT)

    return handle


@op
def process_rows(context: OpExecutionContext) -> int:
    """Every row in one step, as in (b), but through orbit's ``run_rows`` and its ledger."""
    work = RowWork.from_env()
    receiver = os.environ.get(RECEIVER_ENV, "transactional")
    options = ExecutorOptions(batch_size=int(os.environ.get(BATCH_SIZE_ENV, "1000")))
    rows = [{"key": row_key(i), "index": i} for i in range(work.settings.rows)]
    engine = create_store_engine(work.settings.db_url)
    try:
        # run_rows keys the ledger by the run group's root run id: a re-execution from
        # failure finds the rows its parent committed and skips them.
        summary = run_rows(
            context,
            rows,
            key="key",
            handler=_handler(work, receiver),
            options=options,
            store=engine,
        )
    finally:
        work.close()
        engine.dispose()
    return summary.done


@job
def orbit_rows_job() -> None:
    """The benchmark job for orbit: one op, multiprocess executor, as in (b)."""
    process_rows()


def main(argv: list[str]) -> int:
    """Run the job, or re-execute a failed run from failure; print the outcome as JSON."""
    instance = DagsterInstance.get()
    if argv == ["init"]:
        return 0
    options = None
    if argv[:1] == ["reexecute"]:
        options = ReexecutionOptions.from_failure(argv[1], instance)
    elif argv[:1] != ["run"]:
        print("usage: _orbit_worker.py run | reexecute PARENT_RUN_ID", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with execute_job(
        reconstructable(orbit_rows_job), instance, reexecution_options=options
    ) as result:
        elapsed = time.perf_counter() - started
        print(json.dumps({"run_id": result.run_id, "success": result.success, "work_s": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
