"""Two daemons (two recovery sensors) and a person's ``orbit resume`` race on one failed run:
exactly one recovery is launched.

Dagster does not stop a second ``dagster-daemon`` on the same instance: each daemon only
logs "Another SENSOR daemon is still sending heartbeats ... not supported" (the heartbeats
live in the shared storage, so two DAGSTER_HOMEs on one database behave the same). Both
daemons run their own code server with the recovery sensor. Which daemon evaluates a tick
is decided by the sensor's state in the shared storage (``last_tick_start_timestamp``,
read then written, no lock): when a tick is due, whichever daemon looks first takes it,
and a daemon never starts a sensor while its own previous tick of it is still running.
So while one daemon's tick is slow, the next tick is the other daemon's: two evaluations
of the sensor run at once, one in each daemon.

To make the three contenders really meet, the test holds an EXCLUSIVE lock on
``orbit.recoveries`` (reads pass, writes wait): each contender decides to launch, then waits
at its claim INSERT. A sensor tick blocked there lets the other daemon take the next tick,
which blocks too. When both sensors and ``orbit resume`` wait, the lock is released and
they race on the unique ``parent_run_id``: one launches, the others are told the run
already has a recovery.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from sqlalchemy import text

from orbit_pipelines.store.recoveries import recoveries_for_group, set_auto_recovery
from orbit_pipelines_tests.processes import wait_for
from orbit_pipelines_tests.sensors.harness import BIN, REPO_ROOT, Harness, _descendants

ROWS = 30
ENDED = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
# Backends of the contenders, waiting for our lock at their write to orbit.recoveries.
WAITING = text(
    "SELECT application_name, left(query, 120) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    " AND pid <> pg_backend_pid()"
)


def _outcomes(log: Path, action: str, run_id: str) -> int:
    """The sensor's own log lines (context.log) with this outcome for ``run_id``; the
    daemon's tick summary repeats them, so only the sensor's lines are counted."""
    if not log.exists():
        return 0
    needle = f"orbit_recovery - {action}: run {run_id}"
    return sum(1 for line in log.read_text(errors="replace").splitlines() if needle in line)


@pytest.mark.e2e
def test_two_daemons_and_orbit_resume_launch_one_recovery(harness: Harness) -> None:
    first = harness.start_daemon()
    second_log = harness.tmp / "daemon2.log"
    second = harness.children.start(
        [str(BIN / "dagster-daemon"), "run", "-w", str(harness.workspace)],
        env=harness.env(),
        cwd=REPO_ROOT,
        log_path=second_log,
    )
    # Both sensors must be ticking before the race: each daemon's log shows a tick.
    logs = (harness.tmp / "daemon.log", second_log)
    # Each daemon started its own code server (and Dagster did not refuse the second one).
    wait_for(
        lambda: all(_descendants(d.pid, "api grpc") for d in (first, second)),
        timeout_s=120,
        what="both daemons with a code server",
    )
    assert first.poll() is None and second.poll() is None, "Dagster refused a second daemon"

    # Sensors see the failed run but may not act on it yet.
    with harness.engine.begin() as conn:
        set_auto_recovery(conn, False)
    run_id = harness.launch("rows_job", {"rows": ROWS, "row_sleep_s": 0.2})
    _host, pid = harness.wait_rows(run_id, 5)
    os.kill(pid, signal.SIGKILL)
    harness.wait_status(run_id, (DagsterRunStatus.FAILURE,), timeout_s=120)

    with harness.engine.connect() as gate:
        gate.execute(text("LOCK TABLE orbit.recoveries IN EXCLUSIVE MODE"))
        with harness.engine.begin() as conn:
            set_auto_recovery(conn, True)
        resume_log = harness.tmp / "resume.log"
        person = harness.children.start(
            [sys.executable, "-m", "orbit_pipelines.cli", "resume", run_id],
            env=harness.env(),
            cwd=REPO_ROOT,
            log_path=resume_log,
        )
        seen: list[list[tuple[str, str]]] = [[]]

        def three_waiting() -> bool:
            with harness.engine.connect() as probe:
                seen[0] = [(str(a), str(q)) for a, q in probe.execute(WAITING)]
            return len(seen[0]) >= 3

        try:
            # Under the sensor's own 60 s evaluation timeout.
            wait_for(three_waiting, timeout_s=50, interval_s=0.1, what="three waiting")
        except AssertionError:
            raise AssertionError(f"waiting for our lock: {seen[0]}") from None
        assert len(seen[0]) == 3, seen[0]
        gate.commit()  # releases the lock: the three INSERTs race now

    assert person.wait(timeout=120) == 0, resume_log.read_text()
    said = resume_log.read_text()
    assert "launched" in said or "already has a recovery" in said, said
    child = harness.wait_child(run_id)
    # Not asserted: that the child run succeeds. Two daemons on one instance also means two
    # run-queue coordinators, which Dagster does not support: both may dequeue the same
    # queued run and the second launch fails it ("interrupted for a run that was already in
    # a failure state"; seen in CI). What orbit owns, one recovery launched, is checked below;
    # a recovery run's success and effects-once are the single-daemon e2e tests' job.
    harness.wait_status(child.run_id, ENDED)

    # Exactly one recovery of the killed run: one row, one launch, one child run, each
    # effect once.
    time.sleep(5)  # a late tick of either sensor must not add anything
    assert [c.run_id for c in harness.children_of(run_id)] == [child.run_id]
    with harness.engine.connect() as conn:
        rows = recoveries_for_group(conn, run_id)
    of_root = [r for r in rows if r.parent_run_id == run_id]
    assert len(of_root) == 1, rows
    assert of_root[0].recovery_run_id == child.run_id
    # A child failed by the two run coordinators (above) is a failed run of its own, and
    # the sensor recovers it in turn (seen in CI: a second row, whose parent is the child).
    # That is a decision about another run, never a second one about any run.
    assert len({r.parent_run_id for r in rows}) == len(rows), rows
    group = harness.instance.get_run_group(child.run_id)
    assert group is not None
    group_runs = {r.run_id: r for r in group[1]}
    for later in rows:
        if later.parent_run_id == run_id:
            continue
        parent = group_runs.get(later.parent_run_id)
        assert parent is not None and parent.status == DagsterRunStatus.FAILURE, (later, parent)
    launches = sum(_outcomes(p, "launched", run_id) for p in logs) + (
        # Every command first names its database (stderr, captured here with stdout).
        1 if any(line.startswith("launched") for line in said.splitlines()) else 0
    )
    assert launches == 1, (launches, said, of_root[0].decided_by)
    # Both daemons' sensors took part in the race (launched it, or lost it).
    for log in logs:
        assert _outcomes(log, "launched", run_id) + _outcomes(log, "lost_race", run_id), log
    # Every run of the group is the killed run or a recovery run with its decision row
    # (read after the group, so a recovery launched meanwhile has its row).
    with harness.engine.connect() as conn:
        recovery_runs = {r.recovery_run_id for r in recoveries_for_group(conn, run_id)}
    assert set(group_runs) <= {run_id} | recovery_runs, (set(group_runs), recovery_runs)
    # However the child ended, no row's effect happened twice.
    assert set(harness.effects_per_row(run_id).values()) <= {1}
