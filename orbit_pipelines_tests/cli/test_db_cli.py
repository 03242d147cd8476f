"""`orbit db upgrade` / `orbit db check` as a user runs them: a real process, a real database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from sqlalchemy import text

from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.migrations import available_migrations


def orbit(
    *args: str, url: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ORBIT_POSTGRES_URL=url, **(extra_env or {}))
    return subprocess.run(
        [sys.executable, "-m", "orbit_pipelines.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_reports_outdated_then_upgrade_makes_it_current(empty_db_url: str) -> None:
    before = orbit("db", "check", url=empty_db_url)
    assert before.returncode == 1
    assert "orbit db upgrade" in before.stdout

    upgraded = orbit("db", "upgrade", url=empty_db_url)
    assert upgraded.returncode == 0, upgraded.stderr
    for migration in available_migrations():
        assert f"applied {migration.version:04d}_{migration.name}" in upgraded.stdout

    again = orbit("db", "upgrade", url=empty_db_url)
    assert "nothing to apply" in again.stdout

    after = orbit("db", "check", "--json", url=empty_db_url)
    assert after.returncode == 0
    payload = json.loads(after.stdout)
    assert payload["is_current"] is True
    assert payload["pending"] == []


def test_check_sees_a_missing_migration(db_url: str) -> None:
    engine = create_store_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "DELETE FROM orbit.schema_migrations WHERE version = (SELECT max(version) FROM orbit.schema_migrations)"
            )
        )
    engine.dispose()
    result = orbit("db", "check", "--json", url=db_url)
    assert result.returncode == 1
    assert json.loads(result.stdout)["pending"] == [
        f"{available_migrations()[-1].version:04d}_{available_migrations()[-1].name}"
    ]


def test_wrong_url_is_one_clear_line_with_the_password_masked() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://etl:hunter2@127.0.0.1:{port}/orbit"
    result = orbit("db", "check", url=url, extra_env={"ORBIT_CONNECT_RETRY_SECONDS": "1"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("orbit: database postgresql://etl:***@127.0.0.1:")  # which one
    first_line = lines[1]
    assert first_line.startswith("error: E-2001")
    assert f"127.0.0.1:{port}/orbit" in first_line


def test_usage_errors_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orbit_pipelines.cli", "db", "frobnicate"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
