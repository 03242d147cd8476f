"""System (b): plain Dagster. One op loops over every row; recovery is a re-execution from failure.

This is what Dagster's own ``run_retries`` does after a run fails (retry strategy
FROM_FAILURE): the failed step runs again from its first row, because Dagster knows steps,
not rows. The harness calls it the same way the daemon would, without the daemon's polling
delay: ``execute_job(..., reexecution_options=ReexecutionOptions.from_failure(parent))``.

Run as a script (the harness sets the environment, see ``_row_work``):

    python bench/_dagster_worker.py init     create Dagster's tables in the bench database
    python bench/_dagster_worker.py run
    python bench/_dagster_worker.py reexecute PARENT_RUN_ID

It prints one JSON line: run id, success, seconds spent in ``execute_job``.
"""

# No `from __future__ import annotations`: Dagster rejects string annotations on op contexts.
import json
import sys
import time

from _row_work import RowWork
from dagster import (
    DagsterInstance,
    OpExecutionContext,
    ReexecutionOptions,
    execute_job,
    job,
    op,
    reconstructable,
)


@op
def process_rows(context: OpExecutionContext) -> int:
    """Every row, in order, in one step: the only unit Dagster can retry."""
    work = RowWork.from_env()
    try:
        for index in range(work.settings.rows):
            work.handle(index)
    finally:
        work.close()
    context.log.info(f"processed {work.settings.rows} rows")
    return work.settings.rows


@job
def bench_rows_job() -> None:
    """The benchmark job: a single row-looping op (multiprocess executor, the default)."""
    process_rows()


def main(argv: list[str]) -> int:
    """Run the job, or re-execute a failed run from failure; print the outcome as JSON."""
    instance = DagsterInstance.get()
    if argv == ["init"]:
        # Getting the instance created its storage tables; keep that out of the timed runs.
        return 0
    options = None
    if argv[:1] == ["reexecute"]:
        options = ReexecutionOptions.from_failure(argv[1], instance)
    elif argv[:1] != ["run"]:
        print("usage: _dagster_worker.py run | reexecute PARENT_RUN_ID", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with execute_job(
        reconstructable(bench_rows_job), instance, reexecution_options=options
    ) as result:
        elapsed = time.perf_counter() - started
        print(json.dumps({"run_id": result.run_id, "success": result.success, "work_s": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
