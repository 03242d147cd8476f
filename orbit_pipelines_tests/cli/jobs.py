"""Small jobs for CLI tests, importable so `execute_job(reconstructable(...))` can run them."""

from dagster import OpExecutionContext, in_process_executor, job, op

from orbit_pipelines.errors import E1003_INVALID_VALUE, E3001_SERVICE_TIMEOUT, OrbitError


@op
def load_rows(context: OpExecutionContext) -> int:
    """Succeeds: the step a resume must not redo."""
    return 3


@op
def reject_input(context: OpExecutionContext, rows: int) -> None:
    """Fails with an input error: never retried automatically."""
    raise OrbitError(E1003_INVALID_VALUE, f"row 2 of {rows}: quantity 'abc' is not a number")


@op
def time_out(context: OpExecutionContext, rows: int) -> None:
    """Fails with a retryable external-service error."""
    raise OrbitError(E3001_SERVICE_TIMEOUT, "carrier API timed out after 10s")


@job(executor_def=in_process_executor)
def bad_input_job() -> None:
    """load_rows succeeds, reject_input fails with E-1003."""
    reject_input(load_rows())


@job(executor_def=in_process_executor)
def timeout_job() -> None:
    """load_rows succeeds, time_out fails with E-3001."""
    time_out(load_rows())


@op
def fine(context: OpExecutionContext) -> int:
    """Succeeds."""
    return 1


@job(executor_def=in_process_executor)
def fine_job() -> None:
    """Succeeds."""
    fine()
