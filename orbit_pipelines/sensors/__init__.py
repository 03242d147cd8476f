"""Dagster sensors that wire recovery/ into the daemon: ``make_recovery_sensor``."""

from orbit_pipelines.sensors.recovery_sensor import make_recovery_sensor

__all__ = ["make_recovery_sensor"]
