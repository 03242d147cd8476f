"""The Dagster UI tells the truth about a recovery, as a person's browser shows it.

A real daemon and ``dagster-webserver``; a run whose worker and code server are SIGKILLed
(nobody but orbit can end it: reason "dead"), recovered by the sensor; a second run that
fails with a code that is never retried (held). Debian's headless Chromium then opens the
pages and must find, in the text React rendered: on the root run's page orbit's event with
the reason, its detail and the recovery sensor; on the recovery run's page "Launched by"
the sensor and the same reason; in the Runs list the held run's ``orbit/decision`` tag.

``ORBIT_UI_SCREENSHOT=docs/recovered-run-group.png`` also saves the README's image: the
recovery run's page, its event log filtered to orbit's events.
"""

from __future__ import annotations

import os
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from dagster import DagsterRunStatus

from orbit_pipelines.cli import main
from orbit_pipelines.store.recoveries import get_recovery
from orbit_pipelines.tags import DECISION_TAG, SENSOR_NAME_TAG, TICK_ID_TAG
from orbit_pipelines_tests.processes import wait_for
from orbit_pipelines_tests.sensors.harness import BIN, REPO_ROOT, Harness
from orbit_pipelines_tests.ui.chromium import find_chromium, screenshot, wait_for_text

ENDED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
SENSOR = "orbit_recovery"

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium (CI installs it: apt-get install -y --no-install-recommends chromium)",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_webserver(harness: Harness) -> str:
    """``dagster-webserver`` on a free port of this test's deployment; its base URL."""
    port = _free_port()
    harness.children.start(
        [
            str(BIN / "dagster-webserver"),
            "-w",
            str(harness.workspace),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=harness.env(),
        cwd=REPO_ROOT,
        log_path=harness.tmp / "webserver.log",
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/server_info", timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    wait_for(up, timeout_s=240, what="dagster-webserver to answer")
    return base


@pytest.mark.e2e
def test_run_pages_show_the_reason_and_the_sensor(harness: Harness) -> None:
    # No "Join the Dagster community" dialog over the pages (and the screenshots).
    with (harness.home / "dagster.yaml").open("a") as config:
        config.write("\nnux:\n  enabled: false\n")
    harness.start_daemon()
    base = _start_webserver(harness)
    held_id = harness.launch("rows_job", {"rows": 10, "row_sleep_s": 0.1, "fail_code": "E-1013"})
    root_id = harness.launch("rows_job", {"rows": 30, "row_sleep_s": 0.2})
    _host, pid = harness.wait_rows(root_id, 5)
    servers = harness.code_server_pids()
    assert servers, "the daemon started no code server"
    for server in servers:
        os.kill(server, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)

    child = harness.wait_child(root_id, timeout_s=240)
    assert child.tags[SENSOR_NAME_TAG] == SENSOR
    assert child.tags[TICK_ID_TAG].isdigit()
    harness.wait_status(child.run_id, ENDED, timeout_s=240)
    with harness.engine.connect() as conn:
        row = get_recovery(conn, root_id)
    assert row is not None and row.reason == "dead", row
    # "worker process gone on <host>: process_rows (pid N)": the part without the host.
    detail = row.detail.split(": ", 1)[1].split(";")[0]

    def held() -> bool:
        run = harness.instance.get_run_by_id(held_id)
        return run is not None and run.tags.get(DECISION_TAG, "").startswith("held")

    wait_for(held, timeout_s=180, what="the failing run held with orbit/decision")

    # The root run: orbit's event, with the reason, its detail, the sensor and the new run.
    root_text = wait_for_text(
        f"{base}/runs/{root_id}",
        [
            f"orbit recovery: run {root_id} was dead",
            detail,
            f"The recovery sensor {SENSOR} launched recovery run {child.run_id}",
            f"recovery run {child.run_id} of run {root_id} ended SUCCESS",
        ],
    )
    assert "sensor" in root_text
    # The recovery run: Dagster's "Launched by <sensor>" header tag and orbit's event.
    child_text = wait_for_text(
        f"{base}/runs/{child.run_id}",
        [
            "Launched by",
            f"this run was launched by the recovery sensor {SENSOR}",
            f"run {root_id} was dead",
            detail,
        ],
    )
    assert "Manually launched" not in child_text
    # The held run: its page says why and what to do; the Runs list shows its tag.
    wait_for_text(
        f"{base}/runs/{held_id}",
        [
            "was failed (step process_rows failed: E-1013 (row key is missing))",
            "holds it: E-1013",
            "What to do: fix the cause",
            f"orbit resume {held_id}",
        ],
    )
    wait_for_text(f"{base}/runs", [DECISION_TAG, "held (failed)"])

    # A person resumes the held run: its tag and its page say so.
    assert main(["resume", held_id]) == 0
    resumed = harness.wait_child(held_id, timeout_s=120)
    assert SENSOR_NAME_TAG not in resumed.tags  # launched by a person, not the sensor
    run = harness.instance.get_run_by_id(held_id)
    assert run is not None
    assert run.tags[DECISION_TAG] == f"recovered: the orbit CLI launched {resumed.run_id}"
    wait_for_text(
        f"{base}/runs/{held_id}", [f"The orbit CLI launched recovery run {resumed.run_id}"]
    )

    target = os.environ.get("ORBIT_UI_SCREENSHOT")
    if target:
        # The README's image: the recovery run's page, its log filtered to orbit's events.
        assert screenshot(f"{base}/runs/{child.run_id}?logs=orbit%20recovery", Path(target))
