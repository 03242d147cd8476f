"""Row executor: resume, batch commit, aggregation, fork lineage, idempotent effects, heartbeat.

Imports nothing from dagster. Start at ``RowExecutor`` (executor.py). ``batch_runner`` (sink
batches with stable members per attempt) is internal machinery, not a way to write a step:
user steps use ``run_rows`` / ``run_frames`` from ``orbit_pipelines``.
"""

from orbit_pipelines.execution.aggregations import Aggregation, Buffer, Count, Sum, SumBy
from orbit_pipelines.execution.effects import EffectInDoubt, Reconciled
from orbit_pipelines.execution.executor import RowExecutor, StepFailed, row_key_hash
from orbit_pipelines.execution.row_context import RowContext, Token
from orbit_pipelines.execution.scope import ExecutorOptions, ProgressEvent, RunScope, RunSummary

__all__ = [
    "Aggregation",
    "Buffer",
    "Count",
    "EffectInDoubt",
    "ExecutorOptions",
    "ProgressEvent",
    "Reconciled",
    "RowContext",
    "RowExecutor",
    "RunScope",
    "RunSummary",
    "StepFailed",
    "Sum",
    "SumBy",
    "Token",
    "row_key_hash",
]
