"""A code location whose run worker dies between an unsafe effect's intent and its outcome
(and a job whose resource needs an environment variable).

Row ``kill_at`` of the first attempt performs its effect (a row in ``public.doubt_sent``,
committed on its own connection, like an SMS that went out) and then SIGKILLs its own
process before the executor can record the outcome: the effect is in doubt, exactly the
case a person must settle with ``orbit effects resolve``.
"""

import os
import signal
import time

from dagster import (
    Config,
    ConfigurableResource,
    Definitions,
    EnvVar,
    OpExecutionContext,
    in_process_executor,
    job,
    op,
)
from sqlalchemy import text

from orbit_pipelines.dagster_io.resources import OrbitStore
from orbit_pipelines.execution import ExecutorOptions, RowContext, RowExecutor, RunScope
from orbit_pipelines.sensors.recovery_sensor import make_recovery_sensor

DOUBT_TABLE = (
    "CREATE TABLE IF NOT EXISTS public.doubt_sent ("
    " id bigserial PRIMARY KEY, root_run_id text, row_no int, run_id text)"
)


class DoubtConfig(Config):
    """Rows to send and the row whose effect the first attempt dies in."""

    rows: int = 6
    kill_at: int = 2
    row_sleep_s: float = 0.1


@op
def send_rows(context: OpExecutionContext, config: DoubtConfig, orbit_store: OrbitStore) -> int:
    """One unsafe effect per row through orbit's row executor."""
    root = context.run.root_run_id or context.run_id
    first_attempt = context.run.parent_run_id is None
    scope = RunScope(root_run_id=root, run_id=context.run_id, step_key=context.op_handle.name)

    def handle(row: dict[str, int], ctx: RowContext) -> None:
        def send() -> str:
            with orbit_store.engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO public.doubt_sent (root_run_id, row_no, run_id)"
                        " VALUES (:g, :n, :r)"
                    ),
                    {"g": root, "n": row["id"], "r": context.run_id},
                )
            if first_attempt and row["id"] == config.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # sent, outcome never recorded
            return f"sent-{row['id']}"

        time.sleep(config.row_sleep_s)
        ctx.once(f"sms-{row['id']}", send, receiver="unsafe")

    options = ExecutorOptions(batch_size=1, heartbeat_every_s=0.5)
    with RowExecutor(orbit_store.engine, scope, options) as executor:
        summary = executor.run([{"id": n} for n in range(config.rows)], key="id", handler=handle)
    return summary.done


@job(executor_def=in_process_executor)
def doubt_job() -> None:
    """send_rows: an unsafe effect per row."""
    send_rows()


SECRET_SERVICE_ENV = "ORBIT_TEST_SECRET_SERVICE_URL"


class SecretService(ConfigurableResource):
    """A resource whose setting comes from an environment variable (required)."""

    url: str


@op
def call_service(service: SecretService) -> str:
    """Uses the resource."""
    return service.url


@job(executor_def=in_process_executor)
def secret_job() -> None:
    """One step that needs ``SECRET_SERVICE_ENV``."""
    call_service()


defs = Definitions(
    jobs=[doubt_job, secret_job],
    sensors=[make_recovery_sensor()],
    resources={
        "orbit_store": OrbitStore(postgres_url=EnvVar("ORBIT_POSTGRES_URL")),
        "service": SecretService(url=EnvVar(SECRET_SERVICE_ENV)),
    },
)
