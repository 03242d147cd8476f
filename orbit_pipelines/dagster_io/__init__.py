"""Dagster-facing adapters of the store: resources and the checkpoint IO manager."""
