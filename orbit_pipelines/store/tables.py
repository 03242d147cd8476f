"""SQLAlchemy Core views of the tables the migrations create.

The migrations are the source of truth; ``orbit_pipelines_tests/store/test_tables.py``
reflects a migrated database and fails when these definitions drift from it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB

metadata = MetaData(schema="orbit")


def _ts(name: str, *, nullable: bool = False) -> Column[datetime]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    _ts("applied_at"),
)

settings = Table(
    "settings",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", JSONB, nullable=False),
    _ts("updated_at"),
)

step_rows = Table(
    "step_rows",
    metadata,
    Column("root_run_id", Text, primary_key=True),
    Column("step_key", Text, primary_key=True),
    Column("key_hash", Uuid, primary_key=True),
    Column("row_key", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("run_id", Text),
    Column("result", JSONB),
    Column("error_code", Text),
    Column("error_message", Text),
    _ts("updated_at"),
)

# Plain done rows, one record per committed batch (migration 0007).
done_batches = Table(
    "done_batches",
    metadata,
    Column("root_run_id", Text, primary_key=True),
    Column("step_key", Text, primary_key=True),
    Column("batch_seq", BigInteger, primary_key=True, autoincrement=True),
    Column("run_id", Text, nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("key_hashes", LargeBinary, nullable=False),
    Column("row_keys", Text, nullable=False),
    Column("results", JSONB),
    _ts("created_at"),
)

row_tokens = Table(
    "row_tokens",
    metadata,
    Column("root_run_id", Text, primary_key=True),
    Column("step_key", Text, primary_key=True),
    Column("key_hash", Uuid, primary_key=True),
    Column("token_no", Integer, primary_key=True),
    Column("status", Text, nullable=False),
    Column("result", JSONB),
    Column("error_code", Text),
    Column("error_message", Text),
    _ts("updated_at"),
)

batches = Table(
    "batches",
    metadata,
    Column("batch_id", BigInteger, primary_key=True, autoincrement=True),
    Column("root_run_id", Text, nullable=False),
    Column("step_key", Text, nullable=False),
    Column("batch_no", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("run_id", Text),
    _ts("created_at"),
    _ts("updated_at"),
)

batch_members = Table(
    "batch_members",
    metadata,
    Column("batch_id", BigInteger, primary_key=True),
    Column("key_hash", Uuid, primary_key=True),
    Column("row_key", Text, nullable=False),
)

aggregation_state = Table(
    "aggregation_state",
    metadata,
    Column("root_run_id", Text, primary_key=True),
    Column("step_key", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("state", JSONB, nullable=False),
    Column("rows_reflected", BigInteger, nullable=False),
    _ts("updated_at"),
)

# The run group, step and run of effects, once per step execution (migration 0008).
effect_scopes = Table(
    "effect_scopes",
    metadata,
    Column("scope_id", Integer, primary_key=True),
    Column("root_run_id", Text, nullable=False),
    Column("step_key", Text, nullable=False),
    Column("run_id", Text, nullable=False),
    _ts("created_at"),
)

# The idempotency ledger (migration 0008; store.effect_ledger reads and writes it).
effects = Table(
    "effects",
    metadata,
    Column("key_hash", Uuid, primary_key=True),
    Column("row_tag", BigInteger),
    Column("scope_id", Integer, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("result", JSON),
    Column("detail", JSONB),
)

step_fences = Table(
    "step_fences",
    metadata,
    Column("root_run_id", Text, primary_key=True),
    Column("step_key", Text, primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("run_id", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("backend_pid", Integer),
    _ts("backend_start", nullable=True),
    _ts("claimed_at"),
)

heartbeats = Table(
    "heartbeats",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("step_key", Text, primary_key=True),
    Column("root_run_id", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("rows_done", BigInteger, nullable=False),
    Column("rows_total", BigInteger),
    _ts("started_at"),
    _ts("progress_at"),
    _ts("beat_at"),
)

step_outputs = Table(
    "step_outputs",
    metadata,
    Column("output_id", BigInteger, primary_key=True, autoincrement=True),
    Column("root_run_id", Text, nullable=False),
    Column("run_id", Text, nullable=False),
    Column("step_key", Text, nullable=False),
    Column("output_name", Text, nullable=False),
    Column("mapping_key", Text, nullable=False),
    Column("format", Text, nullable=False),
    Column("type_name", Text, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("row_count", BigInteger),
    Column("code_version", Text),
    Column("config_hash", Text),
    _ts("created_at"),
)

step_output_chunks = Table(
    "step_output_chunks",
    metadata,
    Column("output_id", BigInteger, primary_key=True),
    Column("chunk_no", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

recoveries = Table(
    "recoveries",
    metadata,
    Column("recovery_id", BigInteger, primary_key=True, autoincrement=True),
    Column("parent_run_id", Text, nullable=False),
    Column("root_run_id", Text, nullable=False),
    Column("job_name", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("decided_by", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("recovery_run_id", Text),
    _ts("not_before", nullable=True),
    _ts("detected_at"),
    _ts("launched_at", nullable=True),
    _ts("finished_at", nullable=True),
    Column("outcome", Text),
)

run_groups = Table(
    "run_groups",
    metadata,
    Column("root_run_id", Text, primary_key=True),
    _ts("abandoned_at", nullable=True),
    Column("auto_recover", Boolean, nullable=False),
    Column("note", Text),
    _ts("updated_at"),
)

# Views: read-only, reflected by the same test (every column of a view is nullable).
views = MetaData(schema="orbit")

# step_rows and done_batches as rows, in step_rows' shape (migration 0007).
row_outcomes = Table(
    "row_outcomes",
    views,
    Column("root_run_id", Text),
    Column("step_key", Text),
    Column("key_hash", Uuid),
    Column("row_key", Text),
    Column("status", Text),
    Column("attempt", Integer),
    Column("run_id", Text),
    Column("result", JSONB),
    Column("error_code", Text),
    Column("error_message", Text),
    _ts("updated_at", nullable=True),
)
