"""A password never leaves orbit: not in any CLI output or error, not in Dagster's event log.

Three ways people write a password that earlier code printed: a ``?password=`` query
parameter, a libpq keyword string (``host=... password=...``) and a password with an
unescaped ``@``. The CLI cases run the real ``orbit`` console script as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance
from sqlalchemy.engine import make_url

SECRET = "Sup3rS3cret"

COMMANDS: list[tuple[str, ...]] = [
    ("check-interrupted",),
    ("check-interrupted", "--json"),
    ("recover", "--json"),
    ("status", "no-such-run"),
    ("status", "no-such-run", "--json"),
    ("db", "check", "--json"),
    ("auto-recovery",),
]


def orbit_script(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """The installed `orbit` console script, with ORBIT_POSTGRES_URL set to ``url``."""
    script = Path(sys.executable).parent / "orbit"
    return subprocess.run(
        [str(script), *args],
        env=dict(os.environ, ORBIT_POSTGRES_URL=url, ORBIT_CONNECT_RETRY_SECONDS="1"),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def _query_form(db_url: str) -> str:
    # Trust auth on the test server: the password is accepted and ignored, so every command
    # really runs against the database.
    return make_url(db_url).render_as_string(hide_password=False) + f"?password={SECRET}"


def _at_form(db_url: str) -> str:
    parsed = make_url(db_url)
    return f"postgresql://{parsed.username}:pre@{SECRET}@{parsed.host}:{parsed.port or 5432}/{parsed.database}"


@pytest.mark.parametrize("form", ["query", "unescaped_at"])
def test_no_command_prints_the_password(dagster_home: Path, db_url: str, form: str) -> None:
    url = _query_form(db_url) if form == "query" else _at_form(db_url)
    for command in COMMANDS:
        result = orbit_script(*command, url=url)
        output = result.stdout + result.stderr
        assert SECRET not in output, (command, output)
        assert "Traceback" not in output, (command, output)
        # It did reach the database (the URL parsed as meant) and said which one, masked.
        assert "orbit: database postgresql://" in result.stderr, (command, result.stderr)
        assert "***" in result.stderr, (command, result.stderr)
        assert "E-2001" not in output, (command, output)
        if "--json" in command:
            json.loads(result.stdout)


def test_a_keyword_string_is_e2007_with_the_password_masked() -> None:
    url = f"host=127.0.0.1 port=5432 dbname=orbit user=etl password={SECRET}"
    for command in (("check-interrupted",), ("db", "check", "--json")):
        result = orbit_script(*command, url=url)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert SECRET not in output, output
        assert "Traceback" not in output, output
        assert "E-2007" in output and "password=***" in output, output


def _store_health_events(dagster_home: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from orbit_examples.definitions import defs
    from orbit_pipelines.store.urls import dagster_storage_url

    monkeypatch.setenv("ORBIT_POSTGRES_URL", dagster_storage_url(url))
    with DagsterInstance.get() as instance:
        result = defs.resolve_job_def("store_health").execute_in_process(instance=instance)
        assert result.success
        records = instance.all_logs(result.run_id)
        return "\n".join(repr(record) for record in records)


def test_store_health_event_log_has_no_password(
    dagster_home: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _store_health_events(dagster_home, _query_form(db_url), monkeypatch)
    assert "schema_version" in events  # the metadata we scan is there
    assert SECRET not in events


def test_store_health_event_log_has_no_url(
    dagster_home: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _store_health_events(dagster_home, _query_form(db_url), monkeypatch)
    assert "postgresql" not in events and "postgres@" not in events
