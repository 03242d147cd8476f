"""Row executor: resume, batch commit, aggregation, fork lineage, idempotent effects, heartbeat.

Imports nothing from dagster."""
