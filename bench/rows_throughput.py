"""Row executor throughput: prints one JSON line.

    .venv/bin/python bench/rows_throughput.py [--rows 200000]

- ``plain_rows_per_s`` / ``checkpointed_rows_per_s``: a trivial handler, the same loop
  without and with checkpoints (batch 1,000, statuses upserted per batch).
- ``overhead_ratio``: checkpointed / plain wall time for a handler that costs ~20 µs.
- ``copy_rows_per_s``: raw COPY of the same number of per-row ledger rows into
  ``orbit.step_rows`` in the same run: what recording a row at a time costs this Postgres
  at best.
- ``resume_first_row_s``: 1,000,000 rows of which 999,000 are done; time from entering
  the executor to the first pending row. The pending rows are the *last* 1,000 of the
  input (the worst case: every done row is hashed and skipped first).
- ``ledger_bytes_per_row``: ``pg_total_relation_size`` (heap, indexes and TOAST) of
  ``orbit.step_rows`` plus ``orbit.done_batches`` per done row after the checkpointed runs
  (those rows' keys are ints: short keys compress); ``effect_bytes``: ``pg_total_relation_size(orbit.effects)`` per
  effect after ``--effects`` rows with one idempotent effect each.
- ``resume_first_row_s_10m`` / ``resume_rss_mb_10m``: the resume measurement at
  ``--resume-10m-rows`` (10,000,000) done rows, in a fresh process: seconds to the first
  new row (again the worst case, the pending rows last) and that process's peak RSS
  (VmHWM, MB; ``resume_baseline_rss_mb_10m`` is its RSS before the executor started). The
  done rows are COPYed straight into the ledger as the executor records them, one
  ``orbit.done_batches`` record per 1,000 rows (``--resume-layout rows``: one
  ``orbit.step_rows`` row each, the layout of ledgers written before schema version 7);
  nothing runs them.
  ``resume_load_s_10m``: the same with the pending rows *first* (loading the done set
  and the first row, no skipping).
- ``frame_rows_per_s`` / ``frame_plain_rows_per_s``: ``--frame-rows`` (10,000,000) frame
  rows through the chunked DataFrame handler (``frame_rows`` + ``RowExecutor.run``, what
  ``run_frames`` runs; chunks of ``--frame-batch`` rows) with a vectorized pandas transform,
  against the same transform over the same chunks without orbit
  (``frame_plain_whole_rows_per_s``: over the whole frame at once). ``frame_rss_mb``: the
  process's peak RSS (VmHWM, MB) after it, ``frame_base_rss_mb`` its RSS with the frame built
  just before it (run with the other sizes at 0 to see the frame path's own peak).

Smaller sizes: ``--rows``, ``--resume-rows``, ``--effects``, ``--resume-10m-rows``,
``--frame-rows`` (0 skips a measurement).

Runs on a throwaway database (created on ``ORBIT_POSTGRES_URL``'s server, or the local
one) that is dropped at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from orbit_pipelines.execution import ExecutorOptions, RowExecutor, RunScope, row_key_hash
from orbit_pipelines.store.engine import connect_store

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
HANDLER_COST_S = 20e-6
COPY_LEDGER = (
    "COPY orbit.step_rows (root_run_id, step_key, key_hash, row_key, status, run_id) FROM STDIN"
)
COPY_BATCHES = (
    "COPY orbit.done_batches (root_run_id, step_key, run_id, row_count, key_hashes, row_keys)"
    " FROM STDIN"
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


def copy_done_rows(
    url: str, root: str, keys: range, chunk: int = 200_000, *, layout: str = "batches"
) -> None:
    """COPY done ledger rows for ``keys`` (streamed: 10M rows never sit in memory at once):
    one done_batches record per 1,000 keys as the executor writes them, or (``layout``
    "rows") one step_rows row per key."""
    if layout == "rows":
        with psycopg.connect(url) as conn:
            with conn.cursor() as cur, cur.copy(COPY_LEDGER) as copy:
                for at in range(keys.start, keys.stop, chunk):
                    copy.write(ledger_lines(root, range(at, min(at + chunk, keys.stop))))
            conn.commit()
            conn.execute("ANALYZE orbit.step_rows")
            conn.commit()
        return
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur, cur.copy(COPY_BATCHES) as copy:
            for at in range(keys.start, keys.stop, 1000):
                batch = range(at, min(at + 1000, keys.stop))
                digests = b"".join(row_key_hash(i) for i in batch)
                copy.write_row(
                    (root, "rows", "bench", len(batch), digests, "\x1f".join(map(str, batch)))
                )
        conn.commit()
        conn.execute("ANALYZE orbit.done_batches")
        conn.commit()


def resume_first_row(engine: Any, url: str, total: int, pending: int) -> float:
    """Seconds from entering the executor to the first pending row."""
    root = uuid.uuid4().hex
    copy_done_rows(url, root, range(total - pending))
    return first_row_s(engine, root, rows(total))


def first_row_s(engine: Any, root: str, source: Iterator[dict[str, Any]]) -> float:
    """Seconds from entering the executor on ``root``'s ledger to the first pending row."""
    first: list[float] = []

    def handler(row: dict[str, Any], ctx: Any) -> None:
        first.append(time.perf_counter())
        raise _FirstPendingRow

    start = time.perf_counter()
    try:
        with RowExecutor(engine, RunScope(root, "bench-resume", "rows")) as ex:
            ex.run(source, key="id", handler=handler)
    except _FirstPendingRow:
        pass
    return first[0] - start


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def resume_child(url: str, root: str, total: int, pending: int, pending_first: bool) -> None:
    """In a fresh process: the resume of ``root`` (done rows 0..total-pending-1); prints
    first-row seconds, peak RSS and the RSS before the executor started (MB)."""
    engine = connect_store(url)
    with engine.connect() as conn:  # the driver and pool in the baseline, not in the peak
        conn.exec_driver_sql("SELECT 1")
    done = total - pending
    order = (
        [range(done, total), range(done)] if pending_first else [range(done), range(done, total)]
    )
    source = ({"id": i, "amount": i % 97} for part in order for i in part)
    baseline = _status_kb("VmRSS")
    seconds = first_row_s(engine, root, source)
    peak = _status_kb("VmHWM")
    engine.dispose()
    print(
        json.dumps({"first_row_s": seconds, "peak_mb": peak / 1024, "baseline_mb": baseline / 1024})
    )


def resume_10m(url: str, total: int, layout: str) -> dict[str, Any]:
    """The resume at ``total - total // 1000`` COPYed done rows, each case in a new process."""
    root = uuid.uuid4().hex
    pending = max(1, total // 1000)
    copy_done_rows(url, root, range(total - pending), layout=layout)
    out: dict[str, Any] = {}
    for pending_first in (False, True):
        done = subprocess.run(
            [sys.executable, __file__, "--resume-child", url, root, str(total), str(pending)]
            + (["--pending-first"] if pending_first else []),
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        if pending_first:
            out["resume_load_s_10m"] = round(measured["first_row_s"], 3)
            out["resume_load_rss_mb_10m"] = round(measured["peak_mb"], 1)
        else:
            out["resume_first_row_s_10m"] = round(measured["first_row_s"], 3)
            out["resume_rss_mb_10m"] = round(measured["peak_mb"], 1)
            out["resume_baseline_rss_mb_10m"] = round(measured["baseline_mb"], 1)
    out["resume_done_rows_10m"] = total - pending
    out["resume_layout_10m"] = layout
    return out


def transform(chunk: pd.DataFrame) -> pd.Series:
    """The vectorized pandas work of the frame measurement (a priced, taxed, rounded total)."""
    return ((chunk["amount"] * 1.19 + chunk["id"] % 7) * 100).round() / 100


def frame_of(n: int) -> pd.DataFrame:
    """``n`` rows: an int64 key and a float column."""
    import pandas as pd  # here: the resume child's memory baseline has no pandas

    return pd.DataFrame({"id": np.arange(n, dtype="int64"), "amount": np.arange(n) % 97 * 0.5})


def frame_plain(frame: pd.DataFrame, batch: int) -> tuple[float, float]:
    """Seconds of the transform without orbit: over the same chunks, and over the frame."""
    start = time.perf_counter()
    for at in range(0, len(frame), batch):
        transform(frame.iloc[at : at + batch])
    chunked = time.perf_counter() - start
    start = time.perf_counter()
    transform(frame)
    return chunked, time.perf_counter() - start


def frame_checkpointed(engine: Any, frame: pd.DataFrame, batch: int) -> float:
    """Seconds of the same transform through the chunked DataFrame handler (a fresh run)."""
    from orbit_pipelines.dagster_io.frames import frame_rows

    scope = RunScope(uuid.uuid4().hex, "bench-frames", "frames")

    def handler(chunk: pd.DataFrame, fctx: Any) -> None:
        transform(chunk)  # every row of the chunk done: the handler returns None

    start = time.perf_counter()
    with RowExecutor(engine, scope, ExecutorOptions(batch_size=batch)) as ex:
        source = frame_rows(ex, frame, "id", handler, [])
        summary = ex.run(
            source, key=lambda item: item.key, handler=lambda item, ctx: item.apply(ctx)
        )
    elapsed = time.perf_counter() - start
    assert summary.done == len(frame), summary
    return elapsed


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
    with psycopg.connect(url, autocommit=True) as conn:  # VACUUM refuses a transaction
        conn.execute("VACUUM orbit.effects")
    return (relation_bytes(url, "orbit.effects") - before) / n


def main() -> None:
    """Measure and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--resume-rows", type=int, default=1_000_000)
    parser.add_argument("--effects", type=int, default=20_000)
    parser.add_argument("--resume-10m-rows", type=int, default=10_000_000)
    parser.add_argument("--frame-rows", type=int, default=10_000_000)
    parser.add_argument("--frame-batch", type=int, default=10_000)
    parser.add_argument("--resume-child", nargs=4, metavar=("URL", "ROOT", "TOTAL", "PENDING"))
    parser.add_argument("--pending-first", action="store_true")
    parser.add_argument("--resume-layout", choices=("batches", "rows"), default="batches")
    args = parser.parse_args()
    if args.resume_child:
        url, root, total, pending = args.resume_child
        resume_child(url, root, int(total), int(pending), args.pending_first)
        return
    n = args.rows
    extra: dict[str, Any] = {}
    loads: dict[str, list[float]] = {"start": list(os.getloadavg())}
    with scratch_database() as url:
        engine = connect_store(url)
        checkpointed(engine, 10_000, trivial)  # warm up: imports, connections, plans
        plain_s = plain(n, trivial)
        checkpointed_s = checkpointed(engine, n, trivial)
        slow_n = max(1, n // 4)
        plain_slow_s = plain(slow_n, costs_20us)
        checkpointed_slow_s = checkpointed(engine, slow_n, costs_20us)
        done_rows = 10_000 + n + slow_n
        ledger_bytes = (
            relation_bytes(url, "orbit.step_rows") + relation_bytes(url, "orbit.done_batches")
        ) / done_rows
        per_effect = effect_bytes(engine, url, args.effects) if args.effects else None
        copy_per_s = copy_rate(url, n)
        resume_s = (
            resume_first_row(engine, url, args.resume_rows, args.resume_rows // 1000)
            if args.resume_rows
            else None
        )
        loads["after_resume"] = list(os.getloadavg())
        if args.frame_rows:
            frame = frame_of(args.frame_rows)
            chunked_s, whole_s = frame_plain(frame, args.frame_batch)
            frame_base_kb = _status_kb("VmRSS")
            frame_s = frame_checkpointed(engine, frame, args.frame_batch)
            del frame
            extra.update(
                frame_rows=args.frame_rows,
                frame_batch=args.frame_batch,
                frame_rows_per_s=round(args.frame_rows / frame_s),
                frame_plain_rows_per_s=round(args.frame_rows / chunked_s),
                frame_plain_whole_rows_per_s=round(args.frame_rows / whole_s),
                frame_ratio=round(chunked_s / frame_s, 4),
                frame_rss_mb=round(_status_kb("VmHWM") / 1024, 1),
                frame_base_rss_mb=round(frame_base_kb / 1024, 1),
            )
            loads["after_frames"] = list(os.getloadavg())
        engine.dispose()
        if args.resume_10m_rows:
            extra.update(resume_10m(url, args.resume_10m_rows, args.resume_layout))
            loads["after_resume_10m"] = list(os.getloadavg())
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
                "resume_first_row_s": round(resume_s, 3) if resume_s is not None else None,
                "ledger_bytes_per_row": round(ledger_bytes, 1),
                "effect_bytes": round(per_effect, 1) if per_effect is not None else None,
                **extra,
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "load_avg": {k: [round(x, 2) for x in v] for k, v in loads.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
