"""How each benchmarked system runs the job, is crashed, and recovers by its own mechanism.

Every system gets the same two scenarios: a clean run, and a run whose worker SIGKILLs
itself at the kill row (see ``_row_work``) followed by that system's recovery. The
harness starts recovery as soon as the kill is seen: detection latency (a sensor's or a
daemon's polling interval) is not part of these numbers.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import ClassVar

from _harness import ChildOutcome, Scenario, WorkerFailed, run_worker

from orbit_pipelines.dagster_io.dagster_home import dagster_env, prepare_dagster_home
from orbit_pipelines.processes import ChildProcesses


class System:
    """A benchmarked system. ``prepare`` runs once, untimed; the runs return wall seconds."""

    name: ClassVar[str] = ""
    crash_and_recovery: ClassVar[str] = ""

    def __init__(self, children: ChildProcesses, workdir: Path, urls: dict[str, str]) -> None:
        self.children = children
        self.workdir = workdir
        self.urls = urls

    @property
    def db_url(self) -> str:
        """The database holding the receiver (and, for orbit and Dagster, their state)."""
        return self.urls["main"]

    def scenario_env(self) -> dict[str, str]:
        """Extra environment every worker of this system needs."""
        return {}

    def prepare(self) -> None:
        """One-time, untimed setup (schemas, system tables)."""

    def run_clean(self, scenario: Scenario) -> float:
        """Run the job once without a crash; return wall seconds."""
        raise NotImplementedError

    def run_crash(self, scenario: Scenario) -> float:
        """Run, get SIGKILLed at the kill row, recover; return wall seconds for all of it."""
        raise NotImplementedError

    def _worker(
        self, scenario: Scenario, script: str, args: list[str], *, may_kill: bool, label: str
    ) -> ChildOutcome:
        env = scenario.env(may_kill=may_kill)
        env.update(self.scenario_env())
        log = self.workdir / f"{scenario.name}.{label}.log"
        return run_worker(self.children, script, args, env, log)


def _require_killed(scenario: Scenario, outcome: ChildOutcome) -> None:
    if not scenario.kill_marker.exists():
        raise WorkerFailed(f"{scenario.name}: the worker never reached the kill row", outcome)


class DagsterSystem(System):
    """(b) One op loops over the rows; re-executed from failure as ``run_retries`` would."""

    name = "dagster"
    script: ClassVar[str] = "_dagster_worker.py"
    crash_and_recovery = (
        "execute_job (multiprocess executor); the step subprocess SIGKILLs itself at the kill "
        "row; the run worker marks the step and run FAILURE; a new process calls execute_job "
        "with ReexecutionOptions.from_failure(parent) - what run_retries (FROM_FAILURE) "
        "launches - and the op starts again at row 0"
    )

    def scenario_env(self) -> dict[str, str]:
        """Dagster's instance lives in the bench database."""
        home = prepare_dagster_home(self.workdir / "dagster_home")
        return dagster_env(home, self.db_url, base={})

    def prepare(self) -> None:
        """Create Dagster's run and event storage tables before anything is timed."""
        scenario = Scenario(f"{self.name}_init", 0, self.db_url, self.workdir)
        outcome = self._worker(scenario, self.script, ["init"], may_kill=False, label="init")
        if outcome.returncode != 0:
            raise WorkerFailed(f"{self.name}: creating the instance's storage", outcome)

    def run_clean(self, scenario: Scenario) -> float:
        """One execute_job that must succeed."""
        outcome = self._worker(scenario, self.script, ["run"], may_kill=False, label="run")
        if outcome.returncode != 0 or outcome.report.get("success") is not True:
            raise WorkerFailed(f"{self.name}: the clean run did not succeed", outcome)
        return outcome.wall_s

    def run_crash(self, scenario: Scenario) -> float:
        """A run that fails by SIGKILL, then one re-execution from failure."""
        first = self._worker(scenario, self.script, ["run"], may_kill=True, label="run")
        _require_killed(scenario, first)
        parent = first.report.get("run_id")
        if first.returncode != 0 or first.report.get("success") is not False or not parent:
            raise WorkerFailed(f"{self.name}: the killed run did not end as a failed run", first)
        retry = self._worker(
            scenario,
            self.script,
            ["reexecute", str(parent)],
            may_kill=False,
            label="retry",
        )
        if retry.returncode != 0 or retry.report.get("success") is not True:
            raise WorkerFailed(f"{self.name}: the re-execution from failure did not succeed", retry)
        return first.wall_s + retry.wall_s


class DbosSystem(System):
    """(c) A DBOS workflow with one step per row; recovered by launching DBOS again."""

    name = "dbos"
    crash_and_recovery = (
        "DBOS.start_workflow in a worker process; the process SIGKILLs itself inside the step "
        "of the kill row; a new process calls DBOS.launch(), which re-enqueues the PENDING "
        "workflow, replays the recorded steps from the system database and runs the rest; "
        "the harness waits on DBOS.retrieve_workflow(id).get_result()"
    )

    def scenario_env(self) -> dict[str, str]:
        """DBOS's own system database: a dedicated database on the same server."""
        return {"BENCH_DBOS_SYSTEM_URL": self.urls["dbos"]}

    def prepare(self) -> None:
        """Create DBOS's system tables before anything is timed."""
        scenario = Scenario("dbos_init", 0, self.db_url, self.workdir)
        outcome = self._worker(scenario, "_dbos_worker.py", ["init"], may_kill=False, label="init")
        if outcome.returncode != 0:
            raise WorkerFailed("dbos: creating the system database", outcome)

    def run_clean(self, scenario: Scenario) -> float:
        """One workflow that must return the row count."""
        workflow_id = f"{scenario.name}-{uuid.uuid4().hex[:8]}"
        outcome = self._worker(
            scenario, "_dbos_worker.py", ["run", workflow_id], may_kill=False, label="run"
        )
        if outcome.returncode != 0 or outcome.report.get("result") != scenario.rows:
            raise WorkerFailed("dbos: the clean workflow did not finish", outcome)
        return outcome.wall_s

    def run_crash(self, scenario: Scenario) -> float:
        """A workflow whose process dies by SIGKILL, then a new process that recovers it."""
        workflow_id = f"{scenario.name}-{uuid.uuid4().hex[:8]}"
        first = self._worker(
            scenario, "_dbos_worker.py", ["run", workflow_id], may_kill=True, label="run"
        )
        _require_killed(scenario, first)
        if first.returncode != -signal.SIGKILL:
            raise WorkerFailed("dbos: the worker was expected to die by SIGKILL", first)
        retry = self._worker(
            scenario, "_dbos_worker.py", ["recover", workflow_id], may_kill=False, label="recover"
        )
        if retry.returncode != 0 or retry.report.get("result") != scenario.rows:
            raise WorkerFailed("dbos: recovery did not finish the workflow", retry)
        return first.wall_s + retry.wall_s
