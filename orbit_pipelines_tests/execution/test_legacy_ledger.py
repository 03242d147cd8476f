"""Ledgers written by older versions still resume after the upgrade: one from before the
typed key rule (schema version 4), where an int-keyed step in flight across it neither
redoes its done rows nor counts them twice in its aggregation; and a per-row ledger from
before done_batches (schema version 6)."""

from __future__ import annotations

import json
from hashlib import blake2b
from typing import Any

from sqlalchemy import text

from orbit_pipelines.execution import ExecutorOptions, RowExecutor, RunScope, Sum, row_key_hash
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.migrations import _ensure_version_table, available_migrations, upgrade
from orbit_pipelines.store.row_ledger import row_status_counts


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


def test_step_resumes_from_a_version_6_per_row_ledger(empty_db_url: str) -> None:
    """Rows the per-row ledger (before done_batches) holds are not redone after the
    upgrade; its failed row is retried and keeps its one record; new rows go to
    done_batches."""
    _migrate_to(empty_db_url, 6)
    engine = create_store_engine(empty_db_url)
    root, step = "v6-root", "rollup"
    with engine.begin() as conn:
        for key, status in (("a", "done"), ("b", "done"), ("c", "quarantined"), ("d", "failed")):
            conn.execute(
                text(
                    "INSERT INTO orbit.step_rows (root_run_id, step_key, key_hash, row_key,"
                    " status, run_id) VALUES (:r, :s, CAST(:h AS uuid), :k, :st, 'run-old')"
                ),
                {"r": root, "s": step, "h": row_key_hash(key).hex(), "k": key, "st": status},
            )
        conn.execute(
            text(
                "INSERT INTO orbit.aggregation_state (root_run_id, step_key, name, state,"
                " rows_reflected) VALUES (:r, :s, 'total', CAST(:v AS jsonb), 2)"
            ),
            {"r": root, "s": step, "v": json.dumps(3)},
        )
    assert [m.version for m in upgrade(engine)] == [
        m.version for m in available_migrations() if m.version > 6
    ]

    calls: list[str] = []

    def handle(row: dict[str, Any], ctx: Any) -> None:
        calls.append(row["id"])
        ctx.agg["total"].add(row["amount"])

    rows = [{"id": k, "amount": n} for n, k in enumerate("abcdef", start=1)]
    with RowExecutor(
        engine, RunScope(root, "run-new", step), ExecutorOptions(heartbeat_every_s=0.5)
    ) as ex:
        summary = ex.run(rows, key="id", handler=handle, aggregations={"total": Sum()})
    assert calls == ["d", "e", "f"]
    assert summary.skipped_already_done == 3
    assert summary.aggregations["total"] == 3 + 4 + 5 + 6
    with engine.connect() as conn:
        per_row = conn.execute(
            text("SELECT row_key, status, attempt FROM orbit.step_rows ORDER BY row_key")
        ).all()
        batched = conn.execute(text("SELECT row_keys FROM orbit.done_batches")).scalars().all()
        counts = row_status_counts(conn, root, step)
    engine.dispose()
    assert [tuple(r) for r in per_row] == [
        ("a", "done", 1),
        ("b", "done", 1),
        ("c", "quarantined", 1),
        ("d", "done", 2),
    ]
    assert batched == ["e\x1ff"]
    assert counts == {"done": 5, "quarantined": 1}
