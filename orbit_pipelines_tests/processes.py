"""Tests use the same child-process handling as `orbit demo`."""

from orbit_pipelines.processes import ChildProcesses, wait_for

__all__ = ["ChildProcesses", "wait_for"]
