"""The code location loads: a broken import or definition fails CI here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orbit_pipelines.dagster_io.dagster_home import shipped_config


def test_definitions_import_and_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORBIT_POSTGRES_URL", "postgresql://user:pw@localhost/db")
    from orbit_examples.definitions import defs

    for job in defs.resolve_all_job_defs():
        assert job.name


def test_dagster_definitions_validate_passes_on_workspace(dagster_home: Path) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            str(shipped_config("workspace.yaml")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr
