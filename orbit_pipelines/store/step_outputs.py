"""Step outputs in Postgres: one row of facts per output, the payload in chunks.

The IO manager writes an output with ``write_output`` (row + chunks in one transaction,
replacing an earlier copy under the same key) and reads it back with ``read_payload``,
which streams the chunks through a server-side cursor into one preallocated buffer.
``prune_groups`` deletes the outputs of whole run groups; deciding *which* groups may go
needs Dagster's run statuses and lives in ``dagster_io/retention.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from sqlalchemy import ColumnElement, Connection, Engine, delete, func, insert, select, update

from orbit_pipelines.errors import E4006_CHECKPOINT_CORRUPT, OrbitError
from orbit_pipelines.store.tables import step_output_chunks, step_outputs

DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class OutputKey:
    """Which output: the producing run, its step, the output name and the dynamic mapping key."""

    run_id: str
    step_key: str
    output_name: str
    mapping_key: str = ""


@dataclass(frozen=True)
class StoredOutput:
    """The facts recorded about one stored output (no payload)."""

    output_id: int
    root_run_id: str
    run_id: str
    step_key: str
    output_name: str
    mapping_key: str
    format: str
    type_name: str
    content_hash: str
    size_bytes: int
    row_count: int | None
    code_version: str | None
    config_hash: str | None
    created_at: datetime


class ChunkWriter:
    """A write-only binary file whose bytes go to Postgres in chunks of ``chunk_bytes``.

    pyarrow, pickle and json write into it; at most one chunk is buffered in memory, and
    the content hash and size are computed as the bytes pass.
    """

    def __init__(self, conn: Connection, output_id: int, chunk_bytes: int) -> None:
        self._conn = conn
        self._output_id = output_id
        self._chunk_bytes = chunk_bytes
        self._buffer = bytearray()
        self._chunk_no = 0
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def writable(self) -> bool:
        """Always true: this is a sink."""
        return True

    def seekable(self) -> bool:
        """Never: Parquet writers then write strictly forward."""
        return False

    def readable(self) -> bool:
        """Never."""
        return False

    def tell(self) -> int:
        """Bytes written so far (pyarrow asks)."""
        return self.size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Buffer ``data``; flush full chunks to Postgres."""
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self.size += len(view)
        self._buffer += view
        while len(self._buffer) >= self._chunk_bytes:
            self._insert(bytes(self._buffer[: self._chunk_bytes]))
            del self._buffer[: self._chunk_bytes]
        return len(view)

    def flush(self) -> None:
        """Nothing to do until ``finish``: partial chunks stay buffered."""

    def close(self) -> None:
        """pyarrow closes its sink when the Parquet file is complete; keep the bytes."""
        self.closed = True

    def finish(self) -> str:
        """Write the last partial chunk; return the content hash (``sha256:<hex>``)."""
        if self._buffer or self._chunk_no == 0:
            self._insert(bytes(self._buffer))
            self._buffer = bytearray()
        return f"sha256:{self._hash.hexdigest()}"

    def _insert(self, data: bytes) -> None:
        self._conn.execute(
            insert(step_output_chunks).values(
                output_id=self._output_id, chunk_no=self._chunk_no, data=data
            )
        )
        self._chunk_no += 1


def write_output(
    engine: Engine,
    key: OutputKey,
    *,
    root_run_id: str,
    format: str,
    type_name: str,
    row_count: int | None,
    code_version: str | None,
    config_hash: str | None,
    write_payload: Callable[[IO[bytes]], None],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> StoredOutput:
    """Store one output: its row and all its chunks commit together or not at all.

    An earlier copy under the same key (a step retried inside one run) is replaced.
    """
    with engine.begin() as conn:
        conn.execute(delete(step_outputs).where(*_key_clause(key)))
        output_id = conn.execute(
            insert(step_outputs)
            .values(
                root_run_id=root_run_id,
                run_id=key.run_id,
                step_key=key.step_key,
                output_name=key.output_name,
                mapping_key=key.mapping_key,
                format=format,
                type_name=type_name,
                content_hash="pending",
                size_bytes=0,
                row_count=row_count,
                code_version=code_version,
                config_hash=config_hash,
            )
            .returning(step_outputs.c.output_id)
        ).scalar_one()
        writer = ChunkWriter(conn, output_id, chunk_bytes)
        write_payload(writer)  # type: ignore[arg-type]  # a duck-typed binary file
        content_hash = writer.finish()
        row = (
            conn.execute(
                update(step_outputs)
                .where(step_outputs.c.output_id == output_id)
                .values(content_hash=content_hash, size_bytes=writer.size)
                .returning(*step_outputs.c)
            )
            .mappings()
            .one()
        )
    return StoredOutput(**dict(row))


def _key_clause(key: OutputKey) -> list[ColumnElement[bool]]:
    return [
        step_outputs.c.run_id == key.run_id,
        step_outputs.c.step_key == key.step_key,
        step_outputs.c.output_name == key.output_name,
        step_outputs.c.mapping_key == key.mapping_key,
    ]


def find_output(conn: Connection, key: OutputKey) -> StoredOutput | None:
    """The output stored by exactly this run, or None."""
    row = conn.execute(select(step_outputs).where(*_key_clause(key))).mappings().first()
    return StoredOutput(**dict(row)) if row else None


def find_latest_in_group(
    conn: Connection, root_run_id: str, step_key: str, output_name: str, mapping_key: str = ""
) -> StoredOutput | None:
    """The newest copy of this output stored by any run of the group, or None."""
    row = (
        conn.execute(
            select(step_outputs)
            .where(
                step_outputs.c.root_run_id == root_run_id,
                step_outputs.c.step_key == step_key,
                step_outputs.c.output_name == output_name,
                step_outputs.c.mapping_key == mapping_key,
            )
            .order_by(step_outputs.c.created_at.desc(), step_outputs.c.output_id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return StoredOutput(**dict(row)) if row else None


def read_payload(engine: Engine, stored: StoredOutput) -> bytearray:
    """The payload of ``stored``, checked against its content hash.

    Chunks stream through a server-side cursor one at a time into a buffer allocated once at
    the recorded size, so a large output is held once (plus one chunk), never twice.
    """
    payload = bytearray(stored.size_bytes)
    view = memoryview(payload)
    digest = hashlib.sha256()
    offset = 0
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=1).execute(
            select(step_output_chunks.c.data)
            .where(step_output_chunks.c.output_id == stored.output_id)
            .order_by(step_output_chunks.c.chunk_no)
        )
        for (data,) in result:
            end = offset + len(data)
            if end > stored.size_bytes:
                raise _corrupt(
                    stored, f"chunks hold more than the recorded {stored.size_bytes} bytes"
                )
            view[offset:end] = data
            digest.update(data)
            offset = end
            del data
    view.release()
    if offset != stored.size_bytes:
        raise _corrupt(stored, f"chunks hold {offset} of the recorded {stored.size_bytes} bytes")
    if f"sha256:{digest.hexdigest()}" != stored.content_hash:
        raise _corrupt(stored, "the bytes read do not match the recorded content hash")
    return payload


def _corrupt(stored: StoredOutput, detail: str) -> OrbitError:
    return OrbitError(
        E4006_CHECKPOINT_CORRUPT,
        f"stored output '{stored.output_name}' of step '{stored.step_key}' "
        f"(run {stored.run_id}, output_id {stored.output_id}) is damaged: {detail}",
        hint=f"re-execute step '{stored.step_key}' so that it writes a fresh copy",
    )


@dataclass(frozen=True)
class GroupUsage:
    """What one run group holds in the output store."""

    root_run_id: str
    run_ids: tuple[str, ...]
    outputs: int
    size_bytes: int
    newest_at: datetime


def group_usage(conn: Connection) -> list[GroupUsage]:
    """Every run group with stored outputs: its runs, output count, bytes, newest write."""
    rows = conn.execute(
        select(
            step_outputs.c.root_run_id,
            func.array_agg(func.distinct(step_outputs.c.run_id)),
            func.count(),
            func.coalesce(func.sum(step_outputs.c.size_bytes), 0),
            func.max(step_outputs.c.created_at),
        )
        .group_by(step_outputs.c.root_run_id)
        .order_by(step_outputs.c.root_run_id)
    ).all()
    return [
        GroupUsage(root, tuple(sorted(runs)), int(count), int(size), newest)
        for root, runs, count, size, newest in rows
    ]


def prune_groups(conn: Connection, root_run_ids: Iterable[str]) -> tuple[int, int]:
    """Delete every output (and its chunks) of these groups; return (outputs, bytes)."""
    ids = list(root_run_ids)
    if not ids:
        return 0, 0
    rows = conn.execute(
        delete(step_outputs)
        .where(step_outputs.c.root_run_id.in_(ids))
        .returning(step_outputs.c.size_bytes)
    ).all()
    return len(rows), sum(int(size) for (size,) in rows)
