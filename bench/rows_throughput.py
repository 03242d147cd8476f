"""Row executor throughput: prints one JSON line.

    .venv/bin/python bench/rows_throughput.py [--rows 200000]

- ``plain_rows_per_s`` / ``checkpointed_rows_per_s``: a trivial handler, the same loop
  without and with checkpoints (batch 1,000, statuses upserted per batch).
- ``overhead_ratio``: checkpointed / plain wall time for a handler that costs ~20 µs.
- ``copy_rows_per_s``: raw COPY of the same number of ledger-sized rows into
  ``orbit.step_rows`` in the same run: the physical limit of this Postgres.
- ``resume_first_row_s``: 1,000,000 rows of which 999,000 are done; time from entering
  the executor to the first pending row. The pending rows are the *last* 1,000 of the
  input (the worst case: every done row is hashed and skipped first).
- ``ledger_bytes_per_row``: ``pg_total_relation_size(orbit.step_rows)`` per done row after
  the checkpointed runs; ``effect_bytes``: ``pg_total_relation_size(orbit.effects)`` per
  effect after ``--effects`` rows with one idempotent effect each.

Runs on a throwaway database (created on ``ORBIT_POSTGRES_URL``'s server, or the local
one) that is dropped at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from orbit_pipelines.execution import ExecutorOptions, RowExecutor, RunScope, row_key_hash
from orbit_pipelines.store.engine import connect_store

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
HANDLER_COST_S = 20e-6
COPY_LEDGER = (
    "COPY orbit.step_rows (root_run_id, step_key, key_hash, row_key, status, run_id) FROM STDIN"
)


class _FirstPendingRow(BaseException):
    """Stops the resume measurement at the first row that runs."""


@contextmanager
def scratch_database() -> Iterator[str]:
    """A new database on the bench server, dropped afterwards."""
    server = make_url(os.environ.get("ORBIT_POSTGRES_URL") or DEFAULT_SERVER)
    server = server.set(drivername="postgresql")
    admin = server.render_as_string(hide_password=False)
    name = f"orbit_bench_rows_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def rows(n: int) -> Iterator[dict[str, Any]]:
    """The input: one small dict per row."""
    return ({"id": i, "amount": i % 97} for i in range(n))


def trivial(row: dict[str, Any], ctx: Any) -> None:
    """Costs nothing."""


def costs_20us(row: dict[str, Any], ctx: Any) -> None:
    """Spins ~20 µs (a cheap transformation, a dict lookup in a big table...)."""
    end = time.perf_counter() + HANDLER_COST_S
    while time.perf_counter() < end:
        pass


def plain(n: int, handler: Any) -> float:
    """Seconds for the loop with no checkpoints."""
    start = time.perf_counter()
    for row in rows(n):
        handler(row, None)
    return time.perf_counter() - start


def checkpointed(engine: Any, n: int, handler: Any) -> float:
    """Seconds for the same rows through the executor (a fresh logical run)."""
    scope = RunScope(uuid.uuid4().hex, "bench", "rows")
    start = time.perf_counter()
    with RowExecutor(engine, scope, ExecutorOptions(batch_size=1000)) as ex:
        summary = ex.run(rows(n), key="id", handler=handler)
    elapsed = time.perf_counter() - start
    assert summary.done == n
    return elapsed


def ledger_lines(root: str, keys: range) -> bytes:
    """COPY text for ledger rows of these keys (status done)."""
    out = io.StringIO()
    for i in keys:
        digest = row_key_hash(i).hex()  # the executor's key rule for an int key
        out.write(f"{root}\trows\t{digest}\t{i}\tdone\tbench\n")
    return out.getvalue().encode()


def copy_rate(url: str, n: int) -> float:
    """Rows per second of a raw COPY of ``n`` prepared ledger rows."""
    data = ledger_lines(uuid.uuid4().hex, range(n))
    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy(COPY_LEDGER) as copy:
            for at in range(0, len(data), 1 << 20):
                copy.write(data[at : at + (1 << 20)])
        conn.commit()
        return n / (time.perf_counter() - start)


def resume_first_row(engine: Any, url: str, total: int, pending: int) -> float:
    """Seconds from entering the executor to the first pending row."""
    root = uuid.uuid4().hex
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur, cur.copy(COPY_LEDGER) as copy:
            copy.write(ledger_lines(root, range(total - pending)))
        conn.commit()
        conn.execute("ANALYZE orbit.step_rows")
        conn.commit()
    first: list[float] = []

    def handler(row: dict[str, Any], ctx: Any) -> None:
        first.append(time.perf_counter())
        raise _FirstPendingRow

    start = time.perf_counter()
    try:
        with RowExecutor(engine, RunScope(root, "bench-resume", "rows")) as ex:
            ex.run(rows(total), key="id", handler=handler)
    except _FirstPendingRow:
        pass
    return first[0] - start


def relation_bytes(url: str, table: str) -> int:
    """Heap + index + TOAST bytes of an orbit table."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (table,)).fetchone()
    assert row is not None
    return int(row[0])


def effect_bytes(engine: Any, url: str, n: int) -> float:
    """Bytes of ``orbit.effects`` per effect, after ``n`` rows with one effect each."""
    before = relation_bytes(url, "orbit.effects")
    scope = RunScope(uuid.uuid4().hex, "bench-effects", "rows")

    def handler(row: dict[str, Any], ctx: Any) -> None:
        ctx.once(f"charge:{row['id']}", lambda key: {"ok": True})

    with RowExecutor(engine, scope, ExecutorOptions(batch_size=1000)) as ex:
        ex.run(rows(n), key="id", handler=handler)
    with psycopg.connect(url) as conn:
        conn.execute("VACUUM orbit.effects")
    return (relation_bytes(url, "orbit.effects") - before) / n


def main() -> None:
    """Measure and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--resume-rows", type=int, default=1_000_000)
    parser.add_argument("--effects", type=int, default=20_000)
    args = parser.parse_args()
    n = args.rows
    with scratch_database() as url:
        engine = connect_store(url)
        checkpointed(engine, 10_000, trivial)  # warm up: imports, connections, plans
        plain_s = plain(n, trivial)
        checkpointed_s = checkpointed(engine, n, trivial)
        slow_n = max(1, n // 4)
        plain_slow_s = plain(slow_n, costs_20us)
        checkpointed_slow_s = checkpointed(engine, slow_n, costs_20us)
        done_rows = 10_000 + n + slow_n
        ledger_bytes = relation_bytes(url, "orbit.step_rows") / done_rows
        per_effect = effect_bytes(engine, url, args.effects)
        copy_per_s = copy_rate(url, n)
        resume_s = resume_first_row(engine, url, args.resume_rows, args.resume_rows // 1000)
        engine.dispose()
    print(
        json.dumps(
            {
                "rows": n,
                "plain_rows_per_s": round(n / plain_s),
                "checkpointed_rows_per_s": round(n / checkpointed_s),
                "overhead_rows": slow_n,
                "handler_cost_us": HANDLER_COST_S * 1e6,
                "overhead_ratio": round(checkpointed_slow_s / plain_slow_s, 3),
                "copy_rows_per_s": round(copy_per_s),
                "resume_rows": args.resume_rows,
                "resume_done_rows": args.resume_rows - args.resume_rows // 1000,
                "resume_pending_at": "end of input (worst case)",
                "resume_first_row_s": round(resume_s, 3),
                "ledger_bytes_per_row": round(ledger_bytes, 1),
                "effect_bytes": round(per_effect, 1),
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
