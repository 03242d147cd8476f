"""`orbit dev` brings up the Dagster web UI with our code location on the chosen port."""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from orbit_pipelines_tests.processes import ChildProcesses, wait_for

JOBS_QUERY = """
{ repositoriesOrError { ... on RepositoryConnection { nodes {
    name location { name } jobs { name } } } } }
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _graphql(port: int, query: str) -> dict[str, object] | None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            payload: dict[str, object] = json.loads(response.read())
            return payload
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _job_names(port: int) -> set[str]:
    payload = _graphql(port, JOBS_QUERY)
    if not payload or "data" not in payload:
        return set()
    nodes = payload["data"]["repositoriesOrError"].get("nodes", [])  # type: ignore[index]
    return {job["name"] for node in nodes for job in node["jobs"]}


@pytest.mark.e2e
def test_orbit_dev_serves_the_ui_with_our_jobs(
    db_url: str, tmp_path: Path, children: ChildProcesses
) -> None:
    port = _free_port()
    env = dict(os.environ, ORBIT_POSTGRES_URL=db_url, ORBIT_HOME=str(tmp_path / "orbit"))
    env.pop("DAGSTER_HOME", None)
    log = tmp_path / "orbit-dev.log"
    proc = children.start(
        [sys.executable, "-m", "orbit_pipelines.cli", "dev", "--port", str(port)],
        env=env,
        log_path=log,
    )
    wait_for(
        lambda: "store_health" in _job_names(port) or proc.poll() is not None,
        timeout_s=240,
        what="the web UI to list store_health",
    )
    assert proc.poll() is None, log.read_text()[-3000:]
    assert "store_health" in _job_names(port)
    output = log.read_text()
    assert "orbit: database postgresql://" in output
    assert (tmp_path / "orbit" / "dagster_home" / "dagster.yaml").exists()
