"""A step in a child process, for the tests that need a real process to pause or kill.

    python -m orbit_pipelines_tests.execution.fenced_child DB_URL WORKDIR --root R --run-id X ...

Rows are ``{"id": i, "amount": i}`` (or, with ``--input poison``, the crash test's input with
duplicates and poison rows). Per row the handler appends "run_id position" to WORKDIR/invocations
(outside any transaction), runs a transactional effect that INSERTs into
``public.fx_receiver`` (no unique constraint: a repeat is a second row) and adds the amount
to a ``Sum``. Hostile hooks, by row id:

- ``--pause-at I``: SIGSTOP itself at row I (``--pause-when before|after`` its effect): a
  GC pause / VM freeze; the test SIGCONTs it.
- ``--kill-at I``: SIGKILL itself right after row I's effect, mid-batch.
- ``--gate-at I --gate-file F``: after row I's effect, wait (alive) until F exists.

Exit 0 and WORKDIR/<run_id>.json on success; on an error, print ``ERROR <code> <message>``
and exit 3.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from orbit_pipelines.errors import OrbitError
from orbit_pipelines.execution import ExecutorOptions, RowContext, RowExecutor, RunScope, Sum
from orbit_pipelines.store.engine import create_store_engine

RECEIVER_DDL = (
    "CREATE TABLE public.fx_receiver (root text NOT NULL, row_id bigint NOT NULL, "
    "run_id text NOT NULL, txid bigint NOT NULL DEFAULT txid_current(), "
    "at timestamptz NOT NULL DEFAULT clock_timestamp())"
)

# --input poison: the crash test's rows. Keys 0..ROWS-1 once each, plus duplicates of
# every DUP_EVERY-th key later in the input (with another amount, which must never count),
# rows with missing or unusable keys, and rows whose value cannot be recorded.
DUP_EVERY = 97
DUP_OFFSET = 250
BAD_SUM_EVERY = 500  # amount is a str: Sum cannot fold it (E-1015)
BAD_EMIT_EVERY = 700  # ctx.emit of a non-JSON value (E-1015)
BAD_KEYS: list[Any] = [None, float("nan"), "", "nul\x00key", "\ud800", {"k": 1}]
BAD_KEY_EVERY = 1000


def poison_rows(rows: int) -> list[dict[str, Any]]:
    """The crash test's input: valid keys 0..rows-1 plus duplicates and poison rows."""
    out: list[dict[str, Any]] = []
    for i in range(rows):
        amount: Any = str(i) if i % BAD_SUM_EVERY == 0 else i
        out.append({"id": i, "amount": amount, "pos": len(out)})
        if i >= DUP_OFFSET and (i - DUP_OFFSET) % DUP_EVERY == 0:
            dup = i - DUP_OFFSET
            out.append({"id": dup, "amount": 1_000_000, "pos": len(out)})
            out.append({"id": float(dup), "amount": 1_000_000, "pos": len(out)})
        if i % BAD_KEY_EVERY == 0:
            bad = BAD_KEYS[(i // BAD_KEY_EVERY) % len(BAD_KEYS)]
            out.append({"id": bad, "amount": 5, "pos": len(out)})
    return out


def poison_expectations(rows: int) -> dict[str, Any]:
    """What a correct run of ``poison_rows(rows)`` leaves: done keys, E-1015 keys, the sum."""
    bad_value = {i for i in range(rows) if i % BAD_SUM_EVERY == 0 or i % BAD_EMIT_EVERY == 0}
    done = [i for i in range(rows) if i not in bad_value]
    dup_positions = [r["pos"] for r in poison_rows(rows) if r["amount"] == 1_000_000]
    return {
        "done": done,
        "bad_value": sorted(bad_value),
        "sum": sum(done),
        "dup_positions": dup_positions,
        "bad_key_rows": sum(1 for i in range(rows) if i % BAD_KEY_EVERY == 0),
    }


def main(argv: list[str]) -> int:
    """Run (or resume) the step; see the module docstring."""
    p = argparse.ArgumentParser()
    p.add_argument("db_url")
    p.add_argument("workdir", type=Path)
    p.add_argument("--root", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--step", default="fenced")
    p.add_argument("--rows", type=int, default=40)
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--sleep-after-pause", type=float, default=None)
    p.add_argument("--pause-at", type=int, default=None)
    p.add_argument("--pause-when", choices=["before", "after"], default="after")
    p.add_argument("--kill-at", type=int, default=None)
    p.add_argument("--heartbeat", type=float, default=0.2)
    p.add_argument("--input", choices=["plain", "poison"], default="plain")
    p.add_argument("--idle-timeout", type=float, default=None)
    p.add_argument("--gate-at", type=int, default=None)
    p.add_argument("--gate-file", type=Path, default=None)
    args = p.parse_args(argv)

    engine = create_store_engine(args.db_url)
    log = os.open(args.workdir / "invocations", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    paused = False

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        nonlocal paused
        row_id = row["id"]
        # The input position, not the key: a key may be unprintable (a lone surrogate).
        os.write(log, f"{args.run_id} {row.get('pos', row_id)}\n".encode())
        if row_id == args.pause_at and args.pause_when == "before" and not paused:
            paused = True
            os.kill(os.getpid(), signal.SIGSTOP)
        if paused and args.sleep_after_pause is not None:
            time.sleep(args.sleep_after_pause)
        elif args.sleep:
            time.sleep(args.sleep)
        amount = row["amount"]
        bad_emit = (
            args.input == "poison" and isinstance(row_id, int) and row_id % BAD_EMIT_EVERY == 0
        )
        if isinstance(amount, int) and isinstance(row_id, int | float) and not bad_emit:
            # Rows that will be quarantined for their value get no effect: what a
            # quarantined row's transactional effect should do is not what this tests.

            def deliver(conn: psycopg.Connection) -> None:
                conn.execute(
                    "INSERT INTO public.fx_receiver (root, row_id, run_id) VALUES (%s, %s, %s)",
                    (args.root, int(row_id), args.run_id),
                )

            ctx.once(f"fx-{int(row_id)}", deliver, receiver="transactional")
        if row_id == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if row_id == args.gate_at and args.gate_file is not None:
            # Alive, not frozen: wait (heartbeats going on) until the test opens the gate.
            while not args.gate_file.exists():
                time.sleep(0.02)
        if row_id == args.pause_at and args.pause_when == "after" and not paused:
            paused = True
            os.kill(os.getpid(), signal.SIGSTOP)
        if bad_emit:
            ctx.emit({"receipt": object()})
        ctx.agg["sum"].add(amount)

    if args.input == "poison":
        rows: Any = poison_rows(args.rows)
    else:
        rows = ({"id": i, "amount": i} for i in range(args.rows))
    scope = RunScope(args.root, args.run_id, args.step)
    try:
        extra = (
            {}
            if args.idle_timeout is None
            else {"idle_in_transaction_timeout_s": args.idle_timeout}
        )
        options = ExecutorOptions(
            batch_size=args.batch, on_error="quarantine", heartbeat_every_s=args.heartbeat, **extra
        )
        with RowExecutor(engine, scope, options) as ex:
            (args.workdir / f"{args.run_id}.ready").touch()
            summary = ex.run(rows, key="id", handler=handle, aggregations={"sum": Sum()})
    except OrbitError as error:
        print(f"ERROR {error.code} {error.message}", flush=True)
        return 3
    (args.workdir / f"{args.run_id}.json").write_text(
        json.dumps(
            {
                "done": summary.done,
                "skipped": summary.skipped_already_done,
                "quarantined": summary.quarantined,
                "duplicates": summary.duplicates,
                "aggregations": summary.aggregations,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
