"""The `orbit_cli` fixture: call the CLI's ``main`` in this process and capture what it prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest


@dataclass
class CliResult:
    """Exit code and captured output of one CLI call."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def orbit_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``orbit_cli("status", run_id)`` runs ``main`` (the console script's code) in-process."""
    from orbit_pipelines.cli import main

    def call(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return call
