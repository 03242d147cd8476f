"""The demo's database (the URL's, when it may be dropped) and the embedded Postgres it
leaves running: said, and stopped by `orbit db stop` (a real embedded server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orbit_examples.demo import DEMO_DATABASE_ENV, demo_database_name
from orbit_pipelines.cli.demo import choose_database, embedded_note
from orbit_pipelines.store.embedded import embedded_pid, stop_embedded


def test_the_demo_uses_the_database_in_the_url_when_it_may_drop_it() -> None:
    def choose(given: str | None, **env: str) -> tuple[str | None, str | None]:
        return choose_database(given, env, DEMO_DATABASE_ENV, demo_database_name)

    url = "postgresql://etl:s3cret@db:5432/"
    assert choose(None, ORBIT_POSTGRES_URL=url + "orbit_demo_mine") == ("orbit_demo_mine", None)
    assert choose("orbit_demo_x", ORBIT_POSTGRES_URL=url + "orbit_demo_mine") == (
        "orbit_demo_x",
        None,
    )
    assert choose(None, ORBIT_POSTGRES_URL=url + "x", ORBIT_DEMO_DATABASE="orbit_demo_y") == (
        "orbit_demo_y",
        None,
    )
    name, note = choose(None, ORBIT_POSTGRES_URL=url + "warehouse")
    assert name is None  # the demo's default, on the same server
    assert note is not None and "names database 'warehouse'" in note and "s3cret" not in note
    assert choose(None) == (None, None)


def _orbit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orbit_pipelines.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.e2e
def test_db_stop_stops_the_embedded_postgres_the_commands_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "orbit"
    env = {k: v for k, v in os.environ.items() if k not in ("ORBIT_POSTGRES_URL", "DAGSTER_HOME")}
    env["ORBIT_HOME"] = str(home)
    monkeypatch.setenv("ORBIT_HOME", str(home))
    monkeypatch.delenv("ORBIT_POSTGRES_URL", raising=False)
    try:
        # A read command starts the embedded server (and says so) and leaves it running.
        said = _orbit("db", "check", "--json", env=env)
        assert "embedded" in said.stderr, said.stderr
        pid = embedded_pid(home)
        assert pid is not None
        note = embedded_note(was_running=False)
        assert note is not None and f"pid {pid}" in note and "orbit db stop" in note

        stopped = _orbit("db", "stop", "--json", env=env)
        assert stopped.returncode == 0, stopped.stderr
        body = json.loads(stopped.stdout)
        assert (body["stopped"], body["pid"]) == (True, pid)
        assert embedded_pid(home) is None
        assert embedded_note(was_running=False) is None

        again = _orbit("db", "stop", env=env)
        assert again.returncode == 0 and "is not running; nothing to stop" in again.stdout
        named = _orbit(
            "db", "stop", env={**env, "ORBIT_POSTGRES_URL": "postgresql://u:pw@127.0.0.1:1/x"}
        )
        assert "orbit never stops the server it names" in named.stdout
        assert "pw" not in named.stdout.replace("postgresql", "")
    finally:
        stop_embedded(home)
