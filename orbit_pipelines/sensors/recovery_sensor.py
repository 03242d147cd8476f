"""The recovery sensor: every tick, one ``recovery.cycle.run_cycle`` pass.

A plain ``@sensor`` (not a run status sensor): a dead run stays STARTED and changes no
status, so only polling finds it. It never yields a RunRequest (a RunRequest cannot express a
re-execution); recovery runs are created and queued by ``recovery.launch``.
"""

import os

from dagster import (
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from orbit_pipelines.dagster_io.resources import OrbitStore
from orbit_pipelines.recovery.announce import launched_by_tags
from orbit_pipelines.recovery.cycle import run_cycle
from orbit_pipelines.recovery.settings import ENV_PREFIX, RecoverySettings

INTERVAL_ENV = f"{ENV_PREFIX}INTERVAL_S"


def make_recovery_sensor(
    name: str = "orbit_recovery",
    *,
    settings: RecoverySettings | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
    store_key: str = "orbit_store",
) -> SensorDefinition:
    """Build the sensor. Without ``settings`` it reads ``ORBIT_RECOVERY_*`` at every tick
    (the interval once, now, because Dagster fixes it when the code location loads).

    ``store_key``: the resource key under which your ``Definitions`` bind the ``OrbitStore``.
    """
    interval = (
        settings.interval_s
        if settings is not None
        else int(os.environ.get(INTERVAL_ENV) or RecoverySettings.interval_s)
    )

    @sensor(
        name=name,
        minimum_interval_seconds=interval,
        default_status=default_status,
        description=(
            "Finds dead, hung and failed runs of this code location and re-executes them from "
            "the point of failure, once per failed run (see orbit.recoveries)."
        ),
        required_resource_keys={store_key},
    )
    def _recovery_sensor(context: SensorEvaluationContext) -> SkipReason:
        orbit_store: OrbitStore = getattr(context.resources, store_key)
        current = settings or RecoverySettings.from_env()
        repository = context.repository_def
        assert repository is not None
        outcomes = run_cycle(
            context.instance,
            orbit_store.engine,
            current,
            decided_by=f"sensor:{name}",
            # One failure cursor per sensor and code location: each sees only its own jobs.
            scanner=f"sensor:{name}@{context.repository_name or repository.name}",
            job_filter=repository.has_job,
            job_lookup=repository.get_job,
            log=context.log,
            # The UI then says "Launched by <this sensor>" on every recovery run it launches.
            launched_by=launched_by_tags(name, context.log_key),
        )
        acted = [o for o in outcomes if o.action != "waiting"]
        if not outcomes:
            return SkipReason("no dead, hung or failed runs")
        summary = "; ".join(o.line() for o in outcomes[:10])
        return SkipReason(f"{len(acted)} acted, {len(outcomes) - len(acted)} waiting: {summary}")

    return _recovery_sensor
