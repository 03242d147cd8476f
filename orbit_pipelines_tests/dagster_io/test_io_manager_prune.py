"""`orbit db prune`: outputs of finished run groups go; recoverable groups keep theirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance, execute_job, reconstructable
from sqlalchemy import Engine, insert, select, text

from orbit_pipelines.store.step_outputs import OutputKey, write_output
from orbit_pipelines.store.tables import run_groups, step_outputs
from orbit_pipelines_tests.dagster_io import jobs

FAIL = {"ops": {"transform": {"config": {"fail_times": 100}}}}


def orbit_prune(home: Path, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DAGSTER_HOME=str(home), ORBIT_POSTGRES_URL=db_url)
    return subprocess.run(
        [sys.executable, "-m", "orbit_pipelines.cli", "db", "prune", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def roots_with_outputs(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(step_outputs.c.root_run_id).distinct()).scalars())


def test_prune_deletes_finished_and_abandoned_groups_only(
    dagster_home: Path, db_url: str, engine: Engine
) -> None:
    with engine.begin() as conn:
        conn.execute(text(jobs.CALLS_DDL))
    instance = DagsterInstance.get()
    with execute_job(reconstructable(jobs.etl_job), instance) as result:
        succeeded = result.run_id
        assert result.success
    with execute_job(reconstructable(jobs.etl_job), instance, run_config=FAIL) as result:
        failed = result.run_id
        assert not result.success
    with execute_job(reconstructable(jobs.etl_job), instance, run_config=FAIL) as result:
        abandoned = result.run_id
    with engine.begin() as conn:
        conn.execute(insert(run_groups).values(root_run_id=abandoned, abandoned_at=text("now()")))
    # Outputs of a group Dagster has never heard of (runs deleted, or another instance).
    write_output(
        engine,
        OutputKey("ghost-run", "extract", "result"),
        root_run_id="ghost-run",
        format="json",
        type_name="builtins.int",
        row_count=None,
        code_version=None,
        config_hash=None,
        write_payload=lambda sink: sink.write(b"1"),
    )
    everything = {succeeded, failed, abandoned, "ghost-run"}
    assert roots_with_outputs(engine) == everything

    too_young = orbit_prune(dagster_home, db_url, "--older-than", "30d")
    assert too_young.returncode == 0, too_young.stderr
    assert roots_with_outputs(engine) == everything

    dry = orbit_prune(dagster_home, db_url, "--older-than", "0s", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    verdicts = {g["root_run_id"]: g["verdict"] for g in report["groups"]}
    assert verdicts == {
        succeeded: "prune",
        abandoned: "prune",
        failed: "recoverable",
        "ghost-run": "orphan",
    }
    assert report["outputs_deleted"] == 3 + 1  # extract/transform/load + abandoned's extract
    assert roots_with_outputs(engine) == everything, "a dry run deletes nothing"

    real = orbit_prune(dagster_home, db_url, "--older-than", "0s")
    assert real.returncode == 0, real.stderr
    assert "deleted 4 outputs of 2 run groups" in real.stdout
    assert roots_with_outputs(engine) == {failed, "ghost-run"}

    orphans = orbit_prune(dagster_home, db_url, "--older-than", "0s", "--include-orphans")
    assert orphans.returncode == 0, orphans.stderr
    assert roots_with_outputs(engine) == {failed}


def test_prune_rejects_a_malformed_age(dagster_home: Path, db_url: str) -> None:
    result = orbit_prune(dagster_home, db_url, "--older-than", "a month")
    assert result.returncode == 2
    assert "not an age" in result.stderr
