"""A code location for the recovery end-to-end tests.

Its ops checkpoint rows themselves (a done-set table and an effects table the test owns) and
write orbit heartbeats, so a test can kill, hang or fail them at a chosen row and then check
that the recovery run skipped finished steps and rows and that every effect happened once.
"""

import os
import socket
import threading
import time

from dagster import (
    Config,
    Definitions,
    EnvVar,
    OpExecutionContext,
    in_process_executor,
    job,
    op,
)
from sqlalchemy import text

from orbit_pipelines.dagster_io.resources import OrbitStore
from orbit_pipelines.errors import OrbitError, lookup
from orbit_pipelines.execution import ExecutorOptions, RowContext, RowExecutor, RunScope
from orbit_pipelines.sensors.recovery_sensor import make_recovery_sensor
from orbit_pipelines.store.heartbeats import write_heartbeat

TEST_TABLES = (
    "CREATE TABLE IF NOT EXISTS public.e2e_rows_done ("
    " root_run_id text, step_key text, row_no int, run_id text,"
    " PRIMARY KEY (root_run_id, step_key, row_no))",
    "CREATE TABLE IF NOT EXISTS public.e2e_effects ("
    " id bigserial PRIMARY KEY, root_run_id text, row_no int, run_id text)",
    "CREATE TABLE IF NOT EXISTS public.e2e_step_runs ("
    " run_id text, step_key text, root_run_id text, at timestamptz DEFAULT now())",
)


class RowsConfig(Config):
    """How the row step behaves; the faults fire on the first attempt only unless told."""

    rows: int = 20
    row_sleep_s: float = 0.2
    hang_after: int = -1
    fail_code: str = ""
    fail_after: int = 3
    fail_always: bool = False


def _root(context: OpExecutionContext) -> str:
    return context.run.root_run_id or context.run_id


def _record_step(context: OpExecutionContext, store: OrbitStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO public.e2e_step_runs (run_id, step_key, root_run_id) VALUES (:r, :s, :g)"
            ),
            {"r": context.run_id, "s": context.op_handle.name, "g": _root(context)},
        )


@op
def prepare(context: OpExecutionContext, orbit_store: OrbitStore) -> int:
    """A step that finishes before any fault: a recovery must not run it again."""
    _record_step(context, orbit_store)
    return 1


@op
def process_rows(
    context: OpExecutionContext, config: RowsConfig, orbit_store: OrbitStore, ready: int
) -> int:
    """Process rows not yet done; each row's effect and done mark commit together."""
    _record_step(context, orbit_store)
    root = _root(context)
    step = context.op_handle.name
    first_attempt = context.run.parent_run_id is None
    with orbit_store.engine.connect() as conn:
        done = {
            r[0]
            for r in conn.execute(
                text(
                    "SELECT row_no FROM public.e2e_rows_done WHERE root_run_id = :g AND step_key = :s"
                ),
                {"g": root, "s": step},
            )
        }
    progress = {"rows": len(done)}
    stop = threading.Event()

    def beat() -> None:
        with orbit_store.engine.begin() as conn:
            write_heartbeat(
                conn,
                run_id=context.run_id,
                step_key=step,
                root_run_id=root,
                host=socket.gethostname(),
                pid=os.getpid(),
                rows_done=progress["rows"],
                rows_total=config.rows,
            )

    def beat_forever() -> None:
        while not stop.wait(0.5):
            beat()

    beat()
    threading.Thread(target=beat_forever, daemon=True).start()
    processed = 0
    try:
        for row_no in range(config.rows):
            if row_no in done:
                continue
            if first_attempt and processed == config.hang_after:
                while True:  # hung: the heartbeat thread keeps beating, rows never move
                    time.sleep(3600)
            failing = config.fail_code and (first_attempt or config.fail_always)
            if failing and processed == config.fail_after:
                error = lookup(config.fail_code)
                assert error is not None
                raise OrbitError(error, f"row {row_no} failed on purpose")
            with orbit_store.engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO public.e2e_effects (root_run_id, row_no, run_id) VALUES (:g, :n, :r)"
                    ),
                    {"g": root, "n": row_no, "r": context.run_id},
                )
                conn.execute(
                    text(
                        "INSERT INTO public.e2e_rows_done (root_run_id, step_key, row_no, run_id)"
                        " VALUES (:g, :s, :n, :r)"
                    ),
                    {"g": root, "s": step, "n": row_no, "r": context.run_id},
                )
            processed += 1
            progress["rows"] = len(done) + processed
            time.sleep(config.row_sleep_s)
    finally:
        stop.set()
    beat()
    return progress["rows"]


@op
def process_ledger(
    context: OpExecutionContext, config: RowsConfig, orbit_store: OrbitStore, ready: int
) -> int:
    """The same rows through the real row executor: its ledger decides what is done, its
    transactional ``once`` makes each row's effect commit with the row's status."""
    root = _root(context)
    _record_step(context, orbit_store)
    scope = RunScope(root_run_id=root, run_id=context.run_id, step_key=context.op_handle.name)

    def handle(row: dict[str, int], ctx: RowContext) -> None:
        time.sleep(config.row_sleep_s)
        ctx.once(
            f"effect-{row['id']}",
            lambda conn: conn.execute(
                "INSERT INTO public.e2e_effects (root_run_id, row_no, run_id) VALUES (%s, %s, %s)",
                (root, row["id"], context.run_id),
            ),
            receiver="transactional",
        )

    options = ExecutorOptions(batch_size=1, heartbeat_every_s=0.5)
    with RowExecutor(orbit_store.engine, scope, options) as executor:
        summary = executor.run([{"id": n} for n in range(config.rows)], key="id", handler=handle)
    context.log.info(f"done {summary.done}, skipped {summary.skipped_already_done}")
    return summary.done


@job(executor_def=in_process_executor)
def ledger_job() -> None:
    """prepare -> process_ledger (orbit's row executor)."""
    process_ledger(prepare())


@job(executor_def=in_process_executor, tags={"orbit/e2e": "true"})
def rows_job() -> None:
    """prepare -> process_rows; the run worker is the step process (in-process executor)."""
    process_rows(prepare())


@job(executor_def=in_process_executor, tags={"orbit/auto_recover": "false"})
def manual_rows_job() -> None:
    """The same job with automatic recovery switched off by tag."""
    process_rows(prepare())


defs = Definitions(
    jobs=[rows_job, manual_rows_job, ledger_job],
    sensors=[make_recovery_sensor()],
    resources={"orbit_store": OrbitStore(postgres_url=EnvVar("ORBIT_POSTGRES_URL"))},
)
