"""System (c): DBOS. One workflow over all rows, one ``@DBOS.step`` per row.

DBOS records each step's result in its system database after the step returns; on launch
it finds the workflows this executor left PENDING and re-runs them, replaying recorded
steps from the database instead of calling them again. The system database is a dedicated
database on the same Postgres server as the others.

Run as a script (the harness sets the environment, see ``_row_work``, plus
``BENCH_DBOS_SYSTEM_URL``):

    python bench/_dbos_worker.py init                 create DBOS's system tables, then exit
    python bench/_dbos_worker.py run WORKFLOW_ID      start the workflow and wait for it
    python bench/_dbos_worker.py recover WORKFLOW_ID  launch DBOS (which recovers it) and wait

It prints one JSON line: workflow id, rows returned, seconds from launch to result.
"""

from __future__ import annotations

import json
import os
import sys
import time

from _row_work import RowWork, libpq_url
from dbos import DBOS, DBOSConfig, SetWorkflowID

SYSTEM_URL_ENV = "BENCH_DBOS_SYSTEM_URL"

_work: RowWork | None = None


def _row_work() -> RowWork:
    # One receiver connection per process, opened lazily: recovery calls steps from a
    # DBOS worker thread, not from main().
    global _work
    if _work is None:
        _work = RowWork.from_env()
    return _work


@DBOS.step()
def handle_row(index: int) -> str:
    """One row: its result is checkpointed by DBOS when this returns."""
    return _row_work().handle(index)


@DBOS.workflow()
def process_rows(rows: int) -> int:
    """Every row as its own durable step."""
    for index in range(rows):
        handle_row(index)
    return rows


def configure() -> None:
    """Create the DBOS instance on the bench's dedicated system database."""
    config: DBOSConfig = {
        "name": "orbit-bench",
        "system_database_url": libpq_url(os.environ[SYSTEM_URL_ENV]),
        # Fixed, so the recovering process claims the workflows the killed one left.
        "application_version": "orbit-bench-1",
        "executor_id": "local",
        "log_level": "WARNING",
    }
    DBOS(config=config)


def main(argv: list[str]) -> int:
    """Start or recover the workflow, wait for its result, print it as JSON."""
    if argv == ["init"]:
        # Outside the timed runs: the first launch migrates the system database.
        configure()
        DBOS.launch()
        DBOS.destroy()
        return 0
    if len(argv) != 2 or argv[0] not in ("run", "recover"):
        print("usage: _dbos_worker.py init | run|recover WORKFLOW_ID", file=sys.stderr)
        return 2
    mode, workflow_id = argv
    rows = int(os.environ["BENCH_ROWS"])
    started = time.perf_counter()
    configure()
    # launch() recovers this executor's PENDING workflows on its own (a background thread).
    DBOS.launch()
    try:
        if mode == "run":
            with SetWorkflowID(workflow_id):
                handle = DBOS.start_workflow(process_rows, rows)
        else:
            handle = DBOS.retrieve_workflow(workflow_id)
        result = handle.get_result()
        elapsed = time.perf_counter() - started
        print(json.dumps({"workflow_id": workflow_id, "result": result, "work_s": elapsed}))
    finally:
        DBOS.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
