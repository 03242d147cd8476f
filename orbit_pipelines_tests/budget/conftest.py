"""Fixtures of the connection-budget test: the pipeline tests' carrier."""

from orbit_pipelines_tests.pipelines.conftest import carrier

__all__ = ["carrier"]
