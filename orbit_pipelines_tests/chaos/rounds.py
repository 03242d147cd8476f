"""One chaos round: launch a job on random data, kill something at a random moment, let the
recovery sensor finish the work, check the invariants."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dagster import DagsterRunStatus

from orbit_examples.pipelines.orders_input import read_orders
from orbit_examples.pipelines.sample_data import write_orders_csv
from orbit_pipelines.recovery.liveness import pid_alive, this_host
from orbit_pipelines.store.recoveries import recoveries_for_group
from orbit_pipelines_tests.chaos.deployment import TERMINAL, ChaosHarness
from orbit_pipelines_tests.chaos.invariants import (
    Verdict,
    check_sales,
    check_shipments,
    reset_receivers,
)
from orbit_pipelines_tests.chaos.world import World

KINDS = ("step", "worker", "code_server", "daemon", "postgres")
JOBS = ("shipments", "sales_rollup")
# A round that has not finished this long after its kill has failed (it would need a person).
ROUND_TIMEOUT_S = 420.0
# Recoveries rows still 'launching'/'launched' after the group succeeded get this long to
# be marked finished by the sensor's next ticks.
SETTLE_TIMEOUT_S = 90.0


@dataclass
class RoundResult:
    """What one round did and found."""

    number: int
    job: str
    kind: str
    orders: int
    root_run_id: str
    killed: bool = False
    kill_detail: str = ""
    recoveries: int = 0
    daemon_restarts: int = 0
    kill_to_done_s: float | None = None
    verdict: Verdict = field(default_factory=Verdict)

    @property
    def ok(self) -> bool:
        """Every invariant held."""
        return (
            not self.verdict.problems and self.verdict.lost == 0 and not (self.verdict.duplicated)
        )


class Log:
    """Timestamped progress lines on stderr (stdout carries only the JSON line)."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self.sink = sink
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        self.sink(f"[{time.monotonic() - self.started:7.1f}s] {message}")


def _tolerant(fn: Callable[[], Any], default: Any = None) -> Any:
    """Call ``fn``; while our Postgres is down, reads fail: treat them as 'not yet'."""
    try:
        return fn()
    except Exception:
        return default


def _config(job: str, csv: str, rng: random.Random) -> dict[str, Any]:
    batch = rng.choice((5, 10, 20, 50))
    if job == "shipments":
        return {
            "ops": {
                "load_orders": {"config": {"csv_path": csv}},
                "shard_orders": {"config": {"shards": rng.randint(1, 3)}},
                "ship_shard": {"config": {"batch_size": batch, "backoff_s": 0.2}},
            }
        }
    return {
        "ops": {
            "load_orders": {"config": {"csv_path": csv}},
            "rollup_sales": {"config": {"batch_size": batch}},
        }
    }


def _row_step(job: str) -> str:
    return "ship_shard" if job == "shipments" else "rollup_sales"


class Round:
    """State of the round in progress."""

    def __init__(
        self, world: World, number: int, job: str, kind: str, rng: random.Random, log: Log
    ) -> None:
        self.world = world
        self.h: ChaosHarness = world.harness
        self.rng = rng
        self.log = log
        self.job = job
        self.kind = kind
        n_orders = rng.randint(60, 360)
        csv = write_orders_csv(
            world.scratch / f"orders_{number}.csv",
            n_orders,
            seed=rng.randrange(2**31),
            bad_rows=rng.random() < 0.3,
        )
        self.orders = [o.as_json() for o in read_orders(csv).orders]
        self.config = _config(job, str(csv), rng)
        self.result = RoundResult(
            number=number,
            job=job,
            kind=kind,
            orders=len(self.orders),
            root_run_id=str(uuid.uuid4()),
        )

    # -- the round ---------------------------------------------------------------------------

    def play(self) -> RoundResult:
        """Launch, kill, wait, check."""
        root = self.result.root_run_id
        reset_receivers(self.world.engine)
        self.log(
            f"round {self.result.number}: {self.job} ({len(self.orders)} orders), "
            f"kill {self.kind}, run {root}"
        )
        self.h.launch_job(self.job, self.config, root)
        self._kill_at_random_moment()
        self._wait_done()
        self._settle()
        self._check()
        return self.result

    def _kill_at_random_moment(self) -> None:
        root = self.result.root_run_id
        self.h.wait_status(root, (DagsterRunStatus.STARTED, *TERMINAL), timeout_s=180)
        # A quarter of the kills land early (loading, sharding); the rest at a random row.
        early = self.kind != "step" and self.rng.random() < 0.25
        target_rows = 0 if early else self.rng.randint(1, max(1, int(0.8 * len(self.orders))))
        delay = self.rng.uniform(0.0, 3.0) if early else self.rng.uniform(0.0, 0.3)
        step = _row_step(self.job)

        def moment() -> bool:
            run = _tolerant(lambda: self.h.instance.get_run_by_id(root))
            if run is not None and run.status in TERMINAL:
                return True
            if early:
                return True
            beats = _tolerant(lambda: self.h.beats([root]), [])
            done = sum(b.rows_done for b in beats if b.step_key.startswith(step))
            return done >= target_rows

        _wait(moment, timeout_s=240)
        time.sleep(delay)
        run = self.h.instance.get_run_by_id(root)
        if run is not None and run.status in TERMINAL:
            self.result.kill_detail = f"missed: run already {run.status.value}"
            self.log(f"  {self.result.kill_detail}")
            return
        detail = self._kill()
        if detail:
            self.kill_started = time.monotonic()
            self.result.killed = True
            self.result.kill_detail = detail
            self.log(f"  killed {detail}")

    def _kill(self) -> str:
        root = self.result.root_run_id
        if self.kind == "step":
            beats = [
                b
                for b in self.h.beats([root])
                if b.step_key.startswith(_row_step(self.job))
                and b.host == this_host()
                and pid_alive(b.pid)
                and self.h.ours(b.pid)
            ]
            unfinished = [b for b in beats if b.rows_total is None or b.rows_done < b.rows_total]
            if not (unfinished or beats):
                return ""
            beat = self.rng.choice(unfinished or beats)
            os.kill(beat.pid, signal.SIGKILL)
            return f"step process {beat.step_key} pid {beat.pid} at {beat.rows_done} rows"
        if self.kind == "worker":
            workers = self.h.run_worker_pids()
            if not workers:
                return ""
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            return f"run worker pid {', '.join(map(str, workers))}"
        if self.kind == "code_server":
            servers = self.h.code_server_pids()
            for pid in servers:
                os.kill(pid, signal.SIGKILL)
            return f"code server pid {', '.join(map(str, servers))}" if servers else ""
        if self.kind == "daemon":
            pid = self.h.kill_daemon_only()
            down = self.rng.uniform(0.0, 3.0)
            time.sleep(down)
            self.h.start_daemon()
            return f"daemon pid {pid}, restarted after {down:.1f}s"
        if self.kind == "postgres":
            down = self.rng.uniform(0.5, 4.0)
            self.world.postgres.restart(down_s=down)
            return f"postgres (immediate shutdown), restarted after {down:.1f}s"
        raise ValueError(f"unknown kill kind {self.kind}")

    def _wait_done(self) -> None:
        """Until a run of the group succeeded and none is still in flight; a daemon that
        died meanwhile is restarted, as a supervisor would."""
        root = self.result.root_run_id
        started = time.monotonic()
        succeeded_at: float | None = None
        while True:
            if not self.h.daemon_alive():
                self.result.daemon_restarts += 1
                self.log("  daemon exited; restarting it")
                self.h.start_daemon()
            runs = _tolerant(lambda: self.h.group_runs(root), [])
            if (
                runs
                and succeeded_at is None
                and any(r.status == DagsterRunStatus.SUCCESS for r in runs)
            ):
                succeeded_at = time.monotonic()
            if succeeded_at is not None and all(r.status in TERMINAL for r in runs):
                break
            if time.monotonic() - started > ROUND_TIMEOUT_S:
                states = [(r.run_id[:8], r.status.value) for r in runs]
                self.result.verdict.problem(f"not finished after {ROUND_TIMEOUT_S:.0f}s: {states}")
                return
            time.sleep(0.5)
        if self.result.killed and succeeded_at is not None:
            self.result.kill_to_done_s = round(succeeded_at - self.kill_started, 2)

    def _settle(self) -> None:
        """Wait for the sensor to record the outcome of every recovery of the group."""
        root = self.result.root_run_id

        def settled() -> bool:
            with self.world.engine.connect() as conn:
                rows = recoveries_for_group(conn, root)
            return all(r.status not in ("launching", "launched") for r in rows)

        try:
            _wait(lambda: _tolerant(settled, False), timeout_s=SETTLE_TIMEOUT_S)
        except TimeoutError:
            self.result.verdict.problem("a recovery row has no outcome")

    def _check(self) -> None:
        root = self.result.root_run_id
        verdict = self.result.verdict
        runs = self.h.group_runs(root)
        for run in runs:
            if run.status not in TERMINAL:
                verdict.problem(f"run {run.run_id} left {run.status.value}")
        if not any(r.status == DagsterRunStatus.SUCCESS for r in runs):
            verdict.problem("no run of the group succeeded")
        children = [r for r in runs if r.run_id != root]
        self.result.recoveries = len(children)
        with self.world.engine.connect() as conn:
            rows = recoveries_for_group(conn, root)
            check = check_shipments if self.job == "shipments" else check_sales
            found = check(conn, root, self.orders)
        launched = [r for r in rows if r.recovery_run_id is not None]
        if len(launched) != len(children):
            verdict.problem(f"{len(children)} recovery runs but {len(launched)} launch records")
        for row in rows:
            if row.status in ("held", "launching", "launched"):
                verdict.problem(f"recovery of {row.parent_run_id[:8]} is {row.status}")
        failed = [r for r in runs if r.status == DagsterRunStatus.FAILURE]
        recorded = {r.parent_run_id for r in rows}
        for run in failed:
            if run.run_id not in recorded:
                verdict.problem(f"failed run {run.run_id[:8]} has no recovery decision")
        verdict.lost += found.lost
        verdict.duplicated += found.duplicated
        verdict.quarantined += found.quarantined
        verdict.problems += found.problems
        verdict.info.update(found.info)
        self.log(
            f"  done: recoveries {self.result.recoveries}, kill->done "
            f"{self.result.kill_to_done_s}s, lost {verdict.lost}, dup {verdict.duplicated}"
            + (f", PROBLEMS {verdict.problems[:5]}" if verdict.problems else "")
        )


def _wait(predicate: Callable[[], object], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.2)


def play_round(
    world: World, number: int, job: str, kind: str, rng: random.Random, log: Log
) -> RoundResult:
    """Play one round; an exception inside it becomes a problem of the round."""
    current = Round(world, number, job, kind, rng, log)
    try:
        return current.play()
    except Exception as error:  # (a crash of the round is a finding, not an abort)
        current.result.verdict.problem(f"round crashed: {type(error).__name__}: {error}")
        log(f"  round crashed: {type(error).__name__}: {error}")
        return current.result
