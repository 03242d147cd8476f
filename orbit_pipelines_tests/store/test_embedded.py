"""The embedded Postgres: started when ORBIT_POSTGRES_URL is unset, then reused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from orbit_pipelines.store.embedded import embedded_pid, embedded_url, stop_embedded
from orbit_pipelines.store.engine import connect_store


def test_embedded_server_starts_once_and_is_reused(tmp_path: Path) -> None:
    home = tmp_path / "orbit"
    try:
        url = embedded_url(home)
        first_pid = embedded_pid(home)
        assert first_pid is not None
        # A second process resolving the URL with ORBIT_POSTGRES_URL unset finds the same server.
        env = {k: v for k, v in os.environ.items() if k != "ORBIT_POSTGRES_URL"}
        env["ORBIT_HOME"] = str(home)
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "from orbit_pipelines.store.urls import resolve_url; print(resolve_url())",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert out.stdout.strip() == url
        assert embedded_pid(home) == first_pid
        # It is a real server: the orbit schema migrates onto it.
        engine = connect_store(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT max(version) FROM orbit.schema_migrations")).scalar()
        engine.dispose()
    finally:
        stop_embedded(home)
    assert embedded_pid(home) is None
