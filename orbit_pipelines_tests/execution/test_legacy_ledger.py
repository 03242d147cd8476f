"""A ledger written before the typed key rule (schema version 4) still resumes after the
upgrade: an int-keyed step in flight across it neither redoes its done rows nor counts them
twice in its aggregation."""

from __future__ import annotations

import json
from hashlib import blake2b
from typing import Any

from sqlalchemy import text

from orbit_pipelines.execution import ExecutorOptions, RowExecutor, RunScope, Sum
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.migrations import _ensure_version_table, available_migrations, upgrade


def _migrate_to(url: str, version: int) -> None:
    engine = create_store_engine(url)
    with engine.begin() as conn:
        _ensure_version_table(conn)
        for migration in available_migrations():
            if migration.version > version:
                break
            conn.connection.dbapi_connection.cursor().execute(migration.sql)  # type: ignore[union-attr]
            conn.execute(
                text("INSERT INTO orbit.schema_migrations (version, name) VALUES (:v, :n)"),
                {"v": migration.version, "n": migration.name},
            )
    engine.dispose()


def _old_digest(key: Any) -> str:
    """The rule before version 5: every key hashed as ``str(key)``."""
    return blake2b(str(key).encode(), digest_size=16).hexdigest()


def test_int_keyed_step_resumes_from_a_version_4_ledger(empty_db_url: str) -> None:
    _migrate_to(empty_db_url, 4)
    engine = create_store_engine(empty_db_url)
    root, step = "legacy-root", "rollup"
    with engine.begin() as conn:
        # What the old executor committed before the upgrade: rows 1 and 2 done, their sum.
        for key in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO orbit.step_rows (root_run_id, step_key, key_hash, row_key,"
                    " status, run_id, updated_at)"
                    " VALUES (:r, :s, CAST(:h AS uuid), :k, 'done', 'run-old',"
                    " now() - interval '1 hour')"
                ),
                {"r": root, "s": step, "h": _old_digest(key), "k": str(key)},
            )
        conn.execute(
            text(
                "INSERT INTO orbit.aggregation_state (root_run_id, step_key, name, state,"
                " rows_reflected) VALUES (:r, :s, 'total', CAST(:v AS jsonb), 2)"
            ),
            {"r": root, "s": step, "v": json.dumps(30)},
        )
    upgrade(engine)

    calls: list[int] = []

    def handle(row: dict[str, Any], ctx: Any) -> None:
        calls.append(row["id"])
        ctx.agg["total"].add(row["amount"])

    rows = [{"id": 1, "amount": 10}, {"id": 2, "amount": 20}, {"id": 3, "amount": 5}]
    with RowExecutor(
        engine, RunScope(root, "run-new", step), ExecutorOptions(heartbeat_every_s=0.5)
    ) as ex:
        summary = ex.run(rows, key="id", handler=handle, aggregations={"total": Sum()})
    engine.dispose()

    assert calls == [3]
    assert summary.skipped_already_done == 2
    assert summary.aggregations["total"] == 35
