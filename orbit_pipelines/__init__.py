"""orbit_pipelines: crash-safe data pipelines on Dagster.

The public API: everything your own ops and assets need, importable from here. Names not in
``__all__`` (the submodules ``execution``, ``store``, ``recovery``, ...) are internal and may
change. One submodule is in ``__all__``: ``errors``, orbit's error code catalogue, for user
code that raises one of orbit's own codes (``errors.E3001_SERVICE_TIMEOUT``, ...); its public
names are the ``E<digits>_<NAME>`` codes plus the ones exported here (``ErrorCode``,
``OrbitError``, ``register_error_code``).

    from dagster import Definitions, EnvVar, asset
    from orbit_pipelines import OrbitStore, PostgresCheckpointIOManager, RowContext, Sum
    from orbit_pipelines import make_recovery_sensor, run_rows

    @asset
    def charged(context, orbit_store: OrbitStore, orders):
        def charge(row: dict, ctx: RowContext) -> None:
            ctx.once(f"charge:{row['id']}", lambda key: psp.charge(row, idempotency_key=key))
            ctx.agg["total"].add(row["amount"])

        return run_rows(context, orders, key="id", handler=charge,
                        aggregations={"total": Sum()}).aggregations

    store = OrbitStore(postgres_url=EnvVar("ORBIT_POSTGRES_URL"))
    defs = Definitions(
        assets=[charged],
        sensors=[make_recovery_sensor()],
        resources={"orbit_store": store, "io_manager": PostgresCheckpointIOManager(store=store)},
    )

See README.md, "Make your own step crash-safe".
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orbit_pipelines import errors
    from orbit_pipelines.dagster_io.io_manager import PostgresCheckpointIOManager
    from orbit_pipelines.dagster_io.resources import OrbitStore
    from orbit_pipelines.dagster_io.row_steps import (
        FrameContext,
        FrameHandler,
        Handler,
        RowStepContext,
        run_frames,
        run_rows,
    )
    from orbit_pipelines.errors import ErrorCode, OrbitError, register_error_code
    from orbit_pipelines.execution import (
        Aggregation,
        Buffer,
        Count,
        EffectInDoubt,
        ExecutorOptions,
        Reconciled,
        RowContext,
        RunSummary,
        StepFailed,
        Sum,
        SumBy,
        Token,
    )
    from orbit_pipelines.sensors import make_recovery_sensor

# Where each public name lives. Loaded on first use (PEP 562), so that importing a layer that
# must not pull in Dagster (``orbit_pipelines.store``, ``.execution``, ``.errors``) does not
# import Dagster through this package's ``__init__``.
_HOMES = {
    "PostgresCheckpointIOManager": "orbit_pipelines.dagster_io.io_manager",
    "OrbitStore": "orbit_pipelines.dagster_io.resources",
    "FrameContext": "orbit_pipelines.dagster_io.row_steps",
    "FrameHandler": "orbit_pipelines.dagster_io.row_steps",
    "Handler": "orbit_pipelines.dagster_io.row_steps",
    "RowStepContext": "orbit_pipelines.dagster_io.row_steps",
    "run_frames": "orbit_pipelines.dagster_io.row_steps",
    "run_rows": "orbit_pipelines.dagster_io.row_steps",
    "ErrorCode": "orbit_pipelines.errors",
    "OrbitError": "orbit_pipelines.errors",
    "register_error_code": "orbit_pipelines.errors",
    "Aggregation": "orbit_pipelines.execution",
    "Buffer": "orbit_pipelines.execution",
    "Count": "orbit_pipelines.execution",
    "EffectInDoubt": "orbit_pipelines.execution",
    "ExecutorOptions": "orbit_pipelines.execution",
    "Reconciled": "orbit_pipelines.execution",
    "RowContext": "orbit_pipelines.execution",
    "RunSummary": "orbit_pipelines.execution",
    "StepFailed": "orbit_pipelines.execution",
    "Sum": "orbit_pipelines.execution",
    "SumBy": "orbit_pipelines.execution",
    "Token": "orbit_pipelines.execution",
    "make_recovery_sensor": "orbit_pipelines.sensors",
}
# Public submodules: the name is the module itself.
_MODULES = {"errors": "orbit_pipelines.errors"}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value: Any = importlib.import_module(_MODULES[name])
        globals()[name] = value
        return value
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'orbit_pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Aggregation",
    "Buffer",
    "Count",
    "EffectInDoubt",
    "ErrorCode",
    "ExecutorOptions",
    "FrameContext",
    "FrameHandler",
    "Handler",
    "OrbitError",
    "OrbitStore",
    "PostgresCheckpointIOManager",
    "Reconciled",
    "RowContext",
    "RowStepContext",
    "RunSummary",
    "StepFailed",
    "Sum",
    "SumBy",
    "Token",
    "errors",
    "make_recovery_sensor",
    "register_error_code",
    "run_frames",
    "run_rows",
]
