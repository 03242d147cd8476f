"""The thin Dagster side of the row executor: scope from the run, progress in the event
log, counts as output metadata, step failures that carry their error code.

    @op(required_resource_keys=...)
    def charge(context: OpExecutionContext, orbit_store: OrbitStore, orders: pd.DataFrame):
        summary = run_rows(context, orbit_store.engine, orders, key="order_id", handler=charge_one)
        return summary.aggregations

No ``from __future__ import annotations`` here: Dagster inspects these annotations.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dagster import Failure, MetadataValue, OpExecutionContext
from sqlalchemy import Engine

from orbit_pipelines.execution import (
    Aggregation,
    ExecutorOptions,
    ProgressEvent,
    RowExecutor,
    RunScope,
    RunSummary,
    StepFailed,
)
from orbit_pipelines.execution.executor import Handler, KeyFn

ROOT_RUN_TAG = "orbit/root_run"


def step_scope(context: OpExecutionContext) -> RunScope:
    """The logical run (the run group's root) and step of this op invocation.

    Recovery runs carry ``orbit/root_run``; Dagster re-executions set ``root_run_id``; an
    original run is its own root. Mapped steps keep their ``[mapping_key]`` suffix.
    """
    run = context.run
    root = run.tags.get(ROOT_RUN_TAG) or run.root_run_id or run.run_id
    step_key = context.get_step_execution_context().step.key
    return RunScope(root_run_id=root, run_id=run.run_id, step_key=step_key)


def progress_logger(context: OpExecutionContext) -> Callable[[ProgressEvent], None]:
    """Log "row 4,700/10,000 (47%), 3 quarantined" lines to the run's event log."""

    def log(event: ProgressEvent) -> None:
        prefix = "rows finished: " if event.final else ""
        context.log.info(prefix + event.describe())

    return log


def summary_metadata(summary: RunSummary) -> dict[str, Any]:
    """Output metadata for the UI: the counts, plus the aggregation states as JSON."""
    metadata: dict[str, Any] = dict(summary.as_metadata())
    if summary.aggregations:
        metadata["aggregations"] = MetadataValue.json(summary.aggregations)
    return metadata


def run_rows(
    context: OpExecutionContext,
    engine: Engine,
    rows: Iterable[Any],
    *,
    key: str | KeyFn,
    handler: Handler,
    aggregations: Mapping[str, Aggregation] | None = None,
    options: ExecutorOptions | None = None,
) -> RunSummary:
    """Run ``handler`` over the rows of this step that are not done yet.

    Attaches the counts as output metadata. A failing step raises ``dagster.Failure``
    whose description starts with the error code ("E-1003 row 17: ...") so the recovery
    sensor can tell retryable failures from ones that need a person.
    """
    with RowExecutor(engine, step_scope(context), options, progress=progress_logger(context)) as ex:
        try:
            summary = ex.run(rows, key=key, handler=handler, aggregations=aggregations)
        except StepFailed as failed:
            raise Failure(
                description=str(failed), metadata=summary_metadata(failed.summary)
            ) from failed
    context.add_output_metadata(summary_metadata(summary))
    return summary
