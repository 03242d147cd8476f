"""End to end, recovered by the sensor under a real ``dagster-daemon``, after a real SIGKILL
of the step's process from outside (the test's own ``os.kill``):

- an **asset** whose row step has an **unsafe** effect per row (a carrier that honours no
  idempotency key), killed mid-rows: charges had happened for rows whose batch had not
  committed yet; the recovery re-handles those rows and the effect guard returns the
  recorded receipts instead of charging again;
- an **op job** whose step uses the chunked DataFrame handler (``run_frames``), killed
  mid-frame: the chunk in flight had written its rows through ``fctx.conn``, not committed;
  the recovery writes them once, from that chunk on.

Both: the sensor's recovery run succeeds, every row's effect happened exactly once, and the
totals equal a crash-free run's. The steps are in ``crash_steps.py`` (public API only).
One deployment (database, daemon, code server) for the module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from dagster import DagsterRun, DagsterRunStatus
from sqlalchemy import text

from orbit_pipelines.tags import PARTITION_TAG
from orbit_pipelines_tests.partitions.crash_steps import (
    CHARGE_BATCH,
    CHARGE_ROWS,
    FRAME_BATCH,
    FRAME_ROWS,
    expected_charge_totals,
    expected_frame_total,
)
from orbit_pipelines_tests.partitions.harness import PartitionsHarness, deployment
from orbit_pipelines_tests.processes import wait_for
from orbit_pipelines_tests.sensors.harness import BIN, REPO_ROOT

pytestmark = pytest.mark.e2e

ENDED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


@pytest.fixture(scope="module")
def deployed(
    pg_admin_url: str, orbit_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PartitionsHarness]:
    """The module's deployment, daemon running."""
    with deployment(pg_admin_url, orbit_template, tmp_path_factory.mktemp("crash_steps")) as h:
        h.start_daemon()
        yield h


def _launch(
    h: PartitionsHarness,
    job_name: str,
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
) -> str:
    """``dagster job launch`` through the daemon's queue, as a user would; the run id
    (chosen here, or by the caller when a park's target must name it)."""
    run_id = run_id or str(uuid.uuid4())
    args = [str(BIN / "dagster"), "job", "launch", "-w", str(h.workspace), "-j", job_name]
    args += ["--run-id", run_id]
    if tags:
        args += ["--tags", json.dumps(tags)]
    done = subprocess.run(
        args, env=h.env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"dagster job launch failed: {done.stderr[-3000:]}"
    return run_id


def _park(h: PartitionsHarness, target: str, at: int) -> None:
    with h.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO public.crash_parks (target, at) VALUES (:t, :n)"),
            {"t": target, "n": at},
        )


def _kill_parked(h: PartitionsHarness, target: str, run_id: str) -> int:
    """Wait until ``run_id``'s step is parked at ``target``; SIGKILL its process."""

    def parked() -> int | None:
        with h.engine.connect() as conn:
            row = conn.execute(
                text("SELECT fired_in, pid FROM public.crash_parks WHERE target = :t"),
                {"t": target},
            ).first()
        return int(row[1]) if row is not None and row[0] == run_id else None

    pid = wait_for(parked, timeout_s=240, interval_s=0.5, what=f"{run_id} parked at {target}")
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    return pid


def _recovered(h: PartitionsHarness, root: str) -> DagsterRun:
    """The killed run failed (Dagster or orbit's sensor says so); the sensor's recovery of
    it succeeded. Returns the recovery run."""
    parent = h.wait_status(root, ENDED, timeout_s=240)
    assert parent.status == DagsterRunStatus.FAILURE, parent.status
    child = h.wait_child(root, timeout_s=240)
    child = h.wait_status(child.run_id, ENDED, timeout_s=300)
    assert child.status == DagsterRunStatus.SUCCESS, h.failures(child.run_id)
    assert child.root_run_id == root and child.parent_run_id == root
    assert child.tags.get("orbit/recovery_of") == root  # the sensor's, not a UI re-execution
    return child


def _by_run(h: PartitionsHarness, sql: str, params: dict[str, object]) -> dict[str, list[int]]:
    with h.engine.connect() as conn:
        found: dict[str, list[int]] = {}
        for run_id, row_id in conn.execute(text(sql), params):
            found.setdefault(run_id, []).append(int(row_id))
    return {run_id: sorted(ids) for run_id, ids in found.items()}


def test_asset_with_an_unsafe_effect_killed_mid_rows_charges_each_row_once(
    deployed: PartitionsHarness,
) -> None:
    h = deployed
    partition = "2026-11-05"
    target = f"charged_orders:{partition}"
    # Before row 6: rows 0-3 are one committed batch, rows 4 and 5 were charged (the
    # carrier's insert committed, the ledger says succeeded) but their batch was not.
    park_at = CHARGE_BATCH + 2
    _park(h, target, park_at)
    root = _launch(h, "charges_daily_job", {PARTITION_TAG: partition})
    _kill_parked(h, target, root)

    child = _recovered(h, root)
    assert child.tags[PARTITION_TAG] == partition
    charges = _by_run(
        h,
        "SELECT run_id, row_id FROM public.crash_charges WHERE partition = :p",
        {"p": partition},
    )
    every = sorted(i for ids in charges.values() for i in ids)
    assert every == list(range(CHARGE_ROWS)), charges  # each row charged exactly once
    assert charges[root] == list(range(park_at)), charges
    assert charges[child.run_id] == list(range(park_at, CHARGE_ROWS)), charges

    ((mat_run, meta),) = h.materializations("charged_orders", partition)
    assert mat_run == child.run_id
    assert meta["aggregations"] == expected_charge_totals(partition), meta
    # The recovery re-handled rows whose charge had happened: the guard, not the ledger's
    # done set, kept them from being charged twice.
    assert meta["rows_skipped_already_done"] < park_at, meta
    assert h.aggregation_states("charged_orders")[root] == expected_charge_totals(partition)


def test_op_job_on_run_frames_killed_mid_frame_writes_each_row_once(
    deployed: PartitionsHarness,
) -> None:
    h = deployed
    root = str(uuid.uuid4())
    target = f"frames:{root}"
    killed_chunk = 2
    _park(h, target, killed_chunk)
    assert _launch(h, "frames_job", run_id=root) == root
    _kill_parked(h, target, root)

    child = _recovered(h, root)
    assert child.step_keys_to_execute is not None
    assert set(child.step_keys_to_execute) == {"price_rows", "store_total"}
    written = _by_run(h, "SELECT run_id, row_id FROM public.crash_frame_rows", {})
    every = sorted(i for ids in written.values() for i in ids)
    assert every == list(range(FRAME_ROWS)), written  # the killed chunk's writes rolled back
    assert written[root] == list(range(killed_chunk * FRAME_BATCH)), written
    assert written[child.run_id] == list(range(killed_chunk * FRAME_BATCH, FRAME_ROWS))

    with h.engine.connect() as conn:
        totals = conn.execute(
            text("SELECT root, run_id, total FROM public.crash_frame_totals")
        ).all()
    assert [tuple(t) for t in totals] == [(root, child.run_id, expected_frame_total())]
    assert h.aggregation_states("price_rows")[root] == {"net": expected_frame_total()}
