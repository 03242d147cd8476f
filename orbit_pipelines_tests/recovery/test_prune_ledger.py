"""`orbit db prune` removes everything a finished run group stored, keeps what an
unfinished, in-doubt or held group still needs, says what it removed, and refuses a schema
newer than the code."""

from __future__ import annotations

import json
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus
from sqlalchemy import Engine, text

from orbit_pipelines.dagster_io.retention import GROUP_TABLES
from orbit_pipelines.store.effect_ledger import record_effect
from orbit_pipelines.store.step_outputs import OutputKey, write_output
from orbit_pipelines_tests.dagster_io.test_io_manager_prune import orbit_prune
from orbit_pipelines_tests.recovery.many_runs import quiet_job

TABLES = ["step_outputs", *(table.name for table, _ in GROUP_TABLES), "effects"]

_ROWS = [
    "INSERT INTO orbit.step_rows (root_run_id, step_key, key_hash, row_key, status)"
    " VALUES (:root, 's', gen_random_uuid(), 'k', 'done')",
    "INSERT INTO orbit.done_batches (root_run_id, step_key, run_id, row_count, key_hashes,"
    " row_keys) VALUES (:root, 's', :root, 1, uuid_send(gen_random_uuid()), 'k2')",
    "INSERT INTO orbit.row_tokens (root_run_id, step_key, key_hash, token_no, status)"
    " VALUES (:root, 's', gen_random_uuid(), 0, 'done')",
    "INSERT INTO orbit.batches (root_run_id, step_key, batch_no, status)"
    " VALUES (:root, 's', 1, 'completed')",
    "INSERT INTO orbit.aggregation_state (root_run_id, step_key, name, state)"
    " VALUES (:root, 's', 'sum', '1')",
    "INSERT INTO orbit.effect_scopes (root_run_id, step_key, run_id) VALUES (:root, 's', :root)",
    "INSERT INTO orbit.effects (key_hash, scope_id, status) SELECT"
    " orbit.effect_digest('done-' || :root), scope_id, 4 FROM orbit.effect_scopes"
    " WHERE root_run_id = :root",
    "INSERT INTO orbit.step_fences (root_run_id, step_key, epoch, run_id, host, pid)"
    " VALUES (:root, 's', 1, :root, 'h', 1)",
    "INSERT INTO orbit.heartbeats (run_id, step_key, root_run_id, host, pid)"
    " VALUES (:root, 's', :root, 'h', 1)",
    "INSERT INTO orbit.recoveries (parent_run_id, root_run_id, job_name, attempt, reason,"
    " decided_by, status) VALUES ('p-' || :root, :root, 'quiet_job', 1, 'failed', 't', 'succeeded')",
    "INSERT INTO orbit.recovery_decisions (parent_run_id, root_run_id, job_name, reason,"
    " action, depends, decided_by) VALUES ('p-' || :root, :root, 'quiet_job', 'failed',"
    " 'launch', 'final', 't')",
]


def _group(instance: DagsterInstance, engine: Engine, *, failed: bool) -> str:
    """A run group with one row in every table, last touched 40 days ago."""
    run = instance.create_run_for_job(
        job_def=quiet_job,
        status=DagsterRunStatus.STARTED if failed else DagsterRunStatus.SUCCESS,
    )
    if failed:
        instance.report_run_failed(run, "worker lost")
    root = run.run_id
    write_output(
        engine,
        OutputKey(root, "s", "result"),
        root_run_id=root,
        format="json",
        type_name="builtins.int",
        row_count=None,
        code_version=None,
        config_hash=None,
        write_payload=lambda sink: sink.write(b"1"),
    )
    with engine.begin() as conn:
        for statement in _ROWS:
            conn.execute(text(statement), {"root": root})
        conn.execute(
            text(
                "UPDATE orbit.step_outputs SET created_at = now() - interval '40 days'"
                " WHERE root_run_id = :root"
            ),
            {"root": root},
        )
        for table, column in GROUP_TABLES:
            conn.execute(
                text(
                    f"UPDATE orbit.{table.name} SET {column} = now() - interval '40 days'"
                    " WHERE root_run_id = :root"
                ),
                {"root": root},
            )
    return root


def _rows(engine: Engine, root: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: conn.execute(
                # Effects name their group through their scopes (effect_records joins them).
                text(
                    f"SELECT count(*) FROM orbit.{'effect_records' if name == 'effects' else name}"
                    " WHERE root_run_id = :r"
                ),
                {"r": root},
            ).scalar_one()
            for name in TABLES
        }


def test_prune_removes_a_finished_group_and_keeps_unfinished_in_doubt_and_held_ones(
    dagster_home: Path, db_url: str, engine: Engine
) -> None:
    instance = DagsterInstance.get()
    finished = _group(instance, engine, failed=False)
    unfinished = _group(instance, engine, failed=True)
    in_doubt = _group(instance, engine, failed=False)
    held = _group(instance, engine, failed=False)
    with engine.begin() as conn:
        record_effect(
            conn,
            effect_key="pay-1",
            root_run_id=in_doubt,
            step_key="s",
            receiver="unsafe",
            status="in_doubt",
        )
        conn.execute(
            text("UPDATE orbit.recoveries SET status = 'held' WHERE root_run_id = :r"),
            {"r": held},
        )
    one_each = dict.fromkeys(TABLES, 1)
    before = {root: _rows(engine, root) for root in (finished, unfinished, in_doubt, held)}
    assert before[finished] == one_each

    dry = orbit_prune(dagster_home, db_url, "--older-than", "30d", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    verdicts = {g["root_run_id"]: g["verdict"] for g in report["groups"]}
    assert verdicts == {
        finished: "prune",
        unfinished: "recoverable",
        in_doubt: "in-doubt",
        held: "held",
    }
    assert report["rows_deleted"] == one_each
    assert _rows(engine, finished) == one_each  # a dry run deletes nothing

    done = orbit_prune(dagster_home, db_url, "--older-than", "30d")
    assert done.returncode == 0, done.stderr
    assert "deleted rows: step_outputs 1, step_rows 1" in done.stdout
    assert _rows(engine, finished) == dict.fromkeys(TABLES, 0)
    for root in (unfinished, in_doubt, held):
        assert _rows(engine, root) == before[root]


def test_prune_refuses_a_schema_newer_than_the_code(
    dagster_home: Path, db_url: str, engine: Engine
) -> None:
    finished = _group(DagsterInstance.get(), engine, failed=False)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO orbit.schema_migrations (version, name) VALUES (9999, 'future')")
        )
    refused = orbit_prune(dagster_home, db_url, "--older-than", "30d")
    assert refused.returncode != 0
    assert "E-2005" in refused.stdout + refused.stderr
    assert _rows(engine, finished) == dict.fromkeys(TABLES, 1)
