"""A test-only code location: the ``shipments`` example job under ``celery_executor``.

The same graph, resources and recovery sensor as the shipped location; only the executor
differs, so every step (each shard) runs in whichever Celery worker takes its task.
"""

from dagster import Definitions
from dagster_celery import celery_executor

from orbit_examples.pipelines.resources import example_resources
from orbit_examples.pipelines.shipments import shipments
from orbit_pipelines.sensors.recovery_sensor import make_recovery_sensor

BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
JOB = "shipments_celery"

shipments_celery = shipments.graph.to_job(
    name=JOB,
    description="shipments, each step a Celery task (RabbitMQ broker, rpc result backend).",
    executor_def=celery_executor.configured({"broker": BROKER, "backend": "rpc://"}),
    resource_defs=example_resources(carrier=True),
)

defs = Definitions(
    jobs=[shipments_celery],
    sensors=[make_recovery_sensor()],
    resources=example_resources(),
)
