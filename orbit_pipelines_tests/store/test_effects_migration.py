"""Migration 0008 (the compact effect ledger) on a populated schema-6 database: what was in
doubt is still held and listed, what was done is not done again, and a receiver is handed
the same idempotency key as before."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from orbit_pipelines.execution import RowContext, StepFailed
from orbit_pipelines.execution.keys import canonical_key
from orbit_pipelines.store.effect_ledger import effects_in_doubt, resolve_effect
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.migrations import available_migrations, upgrade
from orbit_pipelines.store.recoveries import open_effect_keys
from orbit_pipelines_tests.execution.helpers import executor

ROOT, STEP = "root-1", "step"
OLD_SCHEMA = 6


def _key(user_key: str) -> str:
    return f"{ROOT}/{STEP}/{user_key}"


# Schema 6's ledger, as the code of that version wrote it: a done idempotent effect with
# its result, an unsafe intent whose process died (in doubt), a failed idempotent attempt,
# and a settled effect of another run group.
_OLD_EFFECTS = """
INSERT INTO orbit.effects (effect_key, root_run_id, step_key, row_key, row_hash, receiver,
                           status, attempts, run_id, result, error_code, error_message)
VALUES
  (:done, :root, :step, '1', :h1, 'idempotent', 'succeeded', 1, 'run-0',
   '{"receipt": "R-1"}', NULL, NULL),
  (:doubt, :root, :step, '2', :h2, 'unsafe', 'intent', 1, 'run-0', NULL, NULL, NULL),
  (:failed, :root, :step, '3', :h3, 'idempotent', 'failed', 1, 'run-0', NULL, 'E-4004',
   'RuntimeError: gateway down'),
  ('other/s/k', 'other', 's', NULL, NULL, 'transactional', 'succeeded', 2, NULL, '7', NULL,
   NULL)
"""


@pytest.fixture
def old_engine(empty_db_url: str) -> Iterator[Engine]:
    """A database at schema version 6 holding effects, not yet upgraded."""
    engine = create_store_engine(empty_db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA orbit"))
        conn.execute(
            text(
                "CREATE TABLE orbit.schema_migrations (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        for migration in available_migrations():
            if migration.version <= OLD_SCHEMA:
                cursor.execute(migration.sql)
                conn.execute(
                    text("INSERT INTO orbit.schema_migrations (version, name) VALUES (:v, :n)"),
                    {"v": migration.version, "n": migration.name},
                )
        cursor.close()
        conn.execute(
            text(_OLD_EFFECTS),
            {
                "root": ROOT,
                "step": STEP,
                "done": _key("charge:1"),
                "doubt": _key("pay:2"),
                "failed": _key("charge:3"),
                **{f"h{i}": canonical_key(i).digest.hex() for i in (1, 2, 3)},
            },
        )
    yield engine
    engine.dispose()


def test_upgrade_keeps_what_was_in_doubt_held_and_what_was_done_done(old_engine: Engine) -> None:
    applied = upgrade(old_engine)
    assert applied and applied[-1].version >= 8
    with old_engine.connect() as conn:
        (doubt,) = effects_in_doubt(conn, ROOT)
        assert (doubt.effect_key, doubt.receiver, doubt.row_key, doubt.status) == (
            _key("pay:2"),
            "unsafe",
            "2",
            "intent",
        )
        assert doubt.run_id == "run-0" and doubt.step_key == STEP
        assert open_effect_keys(conn, ROOT) == [_key("pay:2")]
        assert effects_in_doubt(conn, "other") == []

    keys_handed: list[str] = []
    unsafe_calls: list[int] = []

    def handler(row: dict[str, Any], ctx: RowContext) -> None:
        def charge(key: str) -> dict[str, str]:
            keys_handed.append(key)
            return {"receipt": f"R-{row['id']}"}

        if row["id"] == 2:
            ctx.once("pay:2", lambda: unsafe_calls.append(2), receiver="unsafe")
        else:
            ctx.emit(ctx.once(f"charge:{row['id']}", charge))

    rows = [{"id": i} for i in (1, 2, 3)]
    with (
        pytest.raises(StepFailed, match=r"^E-4002 1 row\(s\) held") as raised,
        executor(old_engine, run_id="run-1") as ex,
    ):
        ex.run(rows, key="id", handler=handler)
    # Row 1's effect happened before the upgrade: not repeated. Row 3's failed one is
    # retried with the very key schema 6 handed the receiver. Row 2 stays held.
    assert keys_handed == [_key("charge:3")]
    assert unsafe_calls == []
    assert raised.value.summary.held == 1 and raised.value.summary.done == 2

    with old_engine.begin() as conn:
        assert resolve_effect(conn, _key("pay:2"), "succeeded")
    with executor(old_engine, run_id="run-2") as ex:
        summary = ex.run(rows, key="id", handler=handler)
    assert (summary.done, summary.skipped_already_done) == (1, 2)
    assert keys_handed == [_key("charge:3")] and unsafe_calls == []


def test_a_done_effect_migrated_still_belongs_to_its_row(old_engine: Engine) -> None:
    upgrade(old_engine)

    def reuse(row: dict[str, Any], ctx: RowContext) -> None:
        ctx.once("charge:1", lambda key: None)

    # Row 9 reusing row 1's key is still refused (E-4007): the row digest survived as a tag.
    with pytest.raises(StepFailed, match="E-4007"), executor(old_engine, run_id="run-1") as ex:
        ex.run([{"id": 9}], key="id", handler=reuse)
