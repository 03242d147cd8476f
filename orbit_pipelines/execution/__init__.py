"""Row executor: resume, batch commit, aggregation, fork lineage, idempotent effects, heartbeat.

Imports nothing from dagster. Start at ``RowExecutor`` (executor.py).
"""

from orbit_pipelines.execution.aggregations import Aggregation, Buffer, Count, Sum, SumBy
from orbit_pipelines.execution.batch_runner import BatchInfo, run_batches
from orbit_pipelines.execution.effects import EffectInDoubt, Reconciled
from orbit_pipelines.execution.executor import RowExecutor, StepFailed, row_key_hash
from orbit_pipelines.execution.row_context import RowContext, Token
from orbit_pipelines.execution.scope import ExecutorOptions, ProgressEvent, RunScope, RunSummary

__all__ = [
    "Aggregation",
    "BatchInfo",
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
    "run_batches",
]
