"""One way to write a crash-safe row step, for ops and assets alike.

    @asset                      # or @op, or @multi_asset
    def charged(context: AssetExecutionContext, orbit_store: OrbitStore, orders: pd.DataFrame):
        summary = run_rows(context, orders, key="order_id", handler=charge_one,
                           aggregations={"total": Sum()})
        return summary.aggregations

``run_rows`` calls ``handler(row, ctx)`` once per row that is not done yet; ``run_frames``
hands a vectorized ``handler(frame, fctx)`` each chunk of up to ``batch_size`` pending rows
as a DataFrame and records the per-row outcomes it returns. Both commit per batch, log
progress to the run's event log, attach the counts as output metadata and fail the step
with a ``dagster.Failure`` whose text starts with the error code.

No ``from __future__ import annotations`` here: Dagster inspects these annotations.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

import pandas as pd
from dagster import AssetExecutionContext, Failure, MetadataValue, OpExecutionContext
from sqlalchemy import Engine

from orbit_pipelines.dagster_io.backfill_retry import mark_backfill_run_at_start
from orbit_pipelines.dagster_io.frames import FrameContext, FrameHandler, frame_rows
from orbit_pipelines.dagster_io.resources import OrbitStore
from orbit_pipelines.errors import E2008_BAD_CONFIG, OrbitError
from orbit_pipelines.execution import (
    Aggregation,
    ExecutorOptions,
    ProgressEvent,
    RowContext,
    RowExecutor,
    RunScope,
    RunSummary,
    StepFailed,
)
from orbit_pipelines.tags import root_run_id_of

__all__ = [
    "DEFAULT_STORE_KEY",
    "FrameContext",
    "FrameHandler",
    "Handler",
    "RowStepContext",
    "run_frames",
    "run_rows",
    "step_scope",
]

DEFAULT_STORE_KEY = "orbit_store"

RowStepContext = Union[OpExecutionContext, AssetExecutionContext]  # noqa: UP007 (Dagster reads it)
"""What ``run_rows`` / ``run_frames`` take: the context of an op, an asset or a multi-asset."""

Handler = Callable[[Any, RowContext], Any]
"""``handler(row, ctx)``: one row (a dict for DataFrame rows); raise to fail the row."""

KeyFn = Callable[[Any], Any]
StoreArg = Union[OrbitStore, Engine, None]  # noqa: UP007


def _op_context(context: RowStepContext) -> OpExecutionContext:
    if isinstance(context, AssetExecutionContext):
        return context.op_execution_context
    return context


def step_scope(context: RowStepContext) -> RunScope:
    """The logical run (the run group's root) and step of this op / asset invocation.

    The root is ``orbit_pipelines.tags.root_run_id_of`` (the one rule). Mapped steps keep
    their ``[mapping_key]`` suffix.
    """
    op_context = _op_context(context)
    run = op_context.run
    root = root_run_id_of(run)
    step_key = op_context.get_step_execution_context().step.key
    return RunScope(root_run_id=root, run_id=run.run_id, step_key=step_key)


def progress_logger(context: RowStepContext) -> Callable[[ProgressEvent], None]:
    """Log "row 4,700/10,000 (47%), 3 quarantined" lines to the run's event log."""
    log = _op_context(context).log

    def report(event: ProgressEvent) -> None:
        prefix = "rows finished: " if event.final else ""
        log.info(prefix + event.describe())

    return report


def summary_metadata(summary: RunSummary) -> dict[str, Any]:
    """Output metadata for the UI: the counts, plus the aggregation states as JSON."""
    metadata: dict[str, Any] = dict(summary.as_metadata())
    if summary.aggregations:
        metadata["aggregations"] = MetadataValue.json(summary.aggregations)
    return metadata


def _engine(context: RowStepContext, store: StoreArg, store_key: str) -> Engine:
    if isinstance(store, Engine):
        return store
    if isinstance(store, OrbitStore):
        return store.engine
    resource = getattr(_op_context(context).resources, store_key, None)
    if isinstance(resource, OrbitStore):
        return resource.engine
    raise OrbitError(
        E2008_BAD_CONFIG,
        f"this step has no OrbitStore resource {store_key!r}",
        hint=f"give the op/asset a parameter `{store_key}: OrbitStore` and bind it once in "
        f"Definitions(resources={{{store_key!r}: OrbitStore(...)}}), or pass store=...",
    )


def _add_metadata(context: RowStepContext, summary: RunSummary) -> None:
    metadata = summary_metadata(summary)
    if isinstance(context, AssetExecutionContext):
        # A multi-asset has one output per asset: the counts belong to each of them.
        op_context = context.op_execution_context
        for name in op_context.selected_output_names:
            op_context.add_output_metadata(metadata, output_name=name)
        return
    outputs = list(context.op_def.output_defs)
    if len(outputs) == 1:
        context.add_output_metadata(metadata)
    # An op with several (or no) outputs: the counts go to the event log line instead.


def _execute(
    context: RowStepContext,
    rows: Iterable[Any],
    key: str | KeyFn,
    handler: Handler,
    aggregations: Mapping[str, Aggregation] | None,
    options: ExecutorOptions | None,
    store: StoreArg,
    store_key: str,
    prepare: Callable[[RowExecutor], Iterable[Any]] | None = None,
) -> RunSummary:
    engine = _engine(context, store, store_key)
    scope = step_scope(context)
    # Before any row can fail: a running backfill waits for orbit's retry of this run.
    mark_backfill_run_at_start(_op_context(context).instance, _op_context(context).run, engine)
    with RowExecutor(engine, scope, options, progress=progress_logger(context)) as ex:
        try:
            source = prepare(ex) if prepare is not None else rows
            summary = ex.run(source, key=key, handler=handler, aggregations=aggregations)
        except StepFailed as failed:
            raise Failure(
                description=str(failed), metadata=summary_metadata(failed.summary)
            ) from failed
    _add_metadata(context, summary)
    return summary


def run_rows(
    context: RowStepContext,
    rows: Iterable[Any],
    *,
    key: str | KeyFn,
    handler: Handler,
    aggregations: Mapping[str, Aggregation] | None = None,
    options: ExecutorOptions | None = None,
    store: StoreArg = None,
    store_key: str = DEFAULT_STORE_KEY,
) -> RunSummary:
    """Run ``handler(row, ctx)`` over the rows of this step that are not done yet.

    - ``context``: the op's or asset's context (multi-assets too).
    - ``rows``: a DataFrame (rows reach the handler as dicts), a list or any iterable.
    - ``key``: the column / dict key holding each row's stable key, or a function of the
      row. Rows whose key is already done in this run group are skipped.
    - ``handler``: ``handler(row, ctx)``; ``ctx`` is a ``RowContext``: ``ctx.once(key, fn)``
      for a side effect that must happen once, ``ctx.agg[name].add(v)``, ``ctx.emit(v)``.
      Raise (an ``OrbitError`` with your code, or anything) to fail the row.
    - ``aggregations``: named ``Sum()``, ``Count()``, ``SumBy()``, ``Buffer()``: restored
      exactly on resume; their final states are ``summary.aggregations``.
    - ``options``: ``ExecutorOptions(batch_size=..., on_error="quarantine")``.
    - ``store``: the ``OrbitStore`` (or an Engine); default: the step's resource named
      ``store_key`` ("orbit_store"), which the op/asset must declare as a parameter.

    Attaches the counts as output metadata. A failing step raises ``dagster.Failure``
    whose description starts with the error code ("E-1003 row 17: ...") so the recovery
    sensor can tell retryable failures from ones that need a person.
    """
    return _execute(context, rows, key, handler, aggregations, options, store, store_key)


def run_frames(
    context: RowStepContext,
    frame: pd.DataFrame,
    *,
    key: str,
    handler: FrameHandler,
    aggregations: Mapping[str, Aggregation] | None = None,
    options: ExecutorOptions | None = None,
    store: StoreArg = None,
    store_key: str = DEFAULT_STORE_KEY,
) -> RunSummary:
    """Vectorized row step: ``handler(chunk, fctx)`` gets a DataFrame of up to
    ``options.batch_size`` rows that are not done yet and returns their outcomes.

    The handler returns, aligned with ``chunk``'s index:

    - ``None``: every row of the chunk is done;
    - a Series: per row ``True``/``None`` done, ``False`` failed (E-4004), or an error
      code string ``"E-1003"`` (optionally followed by a message: ``"E-1003 bad price"``);
    - a DataFrame with any of the columns ``error`` (code or None), ``message``,
      ``result`` (recorded for the row, like ``ctx.emit``) and one column per aggregation
      name (the value each done row adds to it).

    Each chunk's outcomes, aggregation states and whatever the handler wrote through
    ``fctx.conn`` (the batch transaction) commit in one transaction: a crash redoes at most
    the chunk in flight, and writes made through ``fctx.conn`` happen once. Row errors are
    quarantined with ``on_error="quarantine"`` when they concern only their row; otherwise
    (fail_fast, a retryable code, or the handler raised a stopping error) the chunk's writes
    are rolled back and the step stops at the chunk's first row, so a rerun hands the
    handler the same rows again. A handler that raises a quarantinable error quarantines
    every pending row of its chunk.
    ``key`` must be a column of ``frame``.
    """
    if key not in frame.columns:
        raise OrbitError(E2008_BAD_CONFIG, f"run_frames: key column {key!r} is not in the frame")
    names = list(aggregations or {})

    def prepare(ex: RowExecutor) -> Iterable[Any]:
        return frame_rows(ex, frame, key, handler, names)

    return _execute(
        context,
        frame,
        _frame_key,
        _apply_outcome,
        aggregations,
        options,
        store,
        store_key,
        prepare=prepare,
    )


def _frame_key(item: Any) -> Any:
    return item.key


def _apply_outcome(item: Any, ctx: RowContext) -> None:
    item.apply(ctx)
