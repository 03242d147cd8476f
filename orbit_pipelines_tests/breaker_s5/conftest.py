"""The CLI fixture of cli/conftest.py, for the tests here that call `orbit`."""

from orbit_pipelines_tests.cli.conftest import orbit_cli  # noqa: F401
