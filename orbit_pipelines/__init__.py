"""orbit_pipelines: crash-safe data pipelines on Dagster."""
