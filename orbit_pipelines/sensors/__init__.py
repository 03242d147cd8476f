"""Dagster sensors that wire recovery/ into the daemon."""
