"""``python -m orbit_pipelines_tests.chaos --rounds N [--seed S] [--jobs ...] [--kinds ...]``

Brings up our own Postgres, the carrier and a ``dagster-daemon`` on the shipped code
location, plays N rounds (see ``rounds.py``), and prints one JSON line on stdout:

    {"rounds": N, "kills": {"step": .., ...}, "recoveries": .., "lost": 0, "duplicated": 0,
     "kill_to_done_s": {"max": .., "median": ..}, ...}

Progress goes to stderr. Exit status 1 when any invariant broke in any round, 2 when the
deployment itself could not be brought up. Every process started is stopped by its pid on
the way out, also on an exception or Ctrl-C (SIGTERM is turned into the same path).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from dagster import DagsterRunStatus, RunsFilter

from orbit_pipelines_tests.chaos.invariants import install_tracking_log
from orbit_pipelines_tests.chaos.rounds import JOBS, KINDS, Log, RoundResult, play_round
from orbit_pipelines_tests.chaos.world import World, chaos_world

IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def _csv(value: str, allowed: Sequence[str]) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (got {value!r})")
    return items


def _pairs(value: str) -> list[tuple[str, str]]:
    pairs = []
    for item in _csv(value, [f"{j}:{k}" for j in JOBS for k in KINDS]):
        job, kind = item.split(":")
        pairs.append((job, kind))
    return pairs


def _not_skipped(job: str, kind: str, kinds: list[str], skip: list[tuple[str, str]]) -> str:
    """``kind``, or the next kind in turn when (job, kind) is to be skipped."""
    start = kinds.index(kind)
    for offset in range(len(kinds)):
        candidate = kinds[(start + offset) % len(kinds)]
        if (job, candidate) not in skip:
            return candidate
    raise SystemExit(f"--skip leaves no kind to play for {job}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(
        prog="python -m orbit_pipelines_tests.chaos",
        description="Kill parts of a real deployment at random moments; check nothing is "
        "lost or done twice.",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument(
        "--jobs", type=lambda v: _csv(v, JOBS), default=list(JOBS), help=",".join(JOBS)
    )
    parser.add_argument(
        "--kinds",
        type=lambda v: _csv(v, KINDS),
        default=list(KINDS),
        help=f"what to kill, taken in turn: {','.join(KINDS)}",
    )
    parser.add_argument(
        "--in-order",
        action="store_true",
        help="take --jobs and --kinds in the order given (default: kinds shuffled by the seed)",
    )
    parser.add_argument(
        "--skip",
        type=_pairs,
        default=[],
        help="job:kind pairs never played, e.g. shipments:worker (the next kind is used)",
    )
    parser.add_argument("--scratch", type=Path, default=None, help="work dir (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir and its logs")
    parser.add_argument("--max-failures", type=int, default=0, help="stop after more (0: never)")
    return parser.parse_args(argv)


def summarize(
    results: list[RoundResult], seed: int, elapsed_s: float, rounds_asked: int
) -> dict[str, Any]:
    """The JSON line."""
    kills = Counter(r.kind for r in results if r.killed)
    times = [r.kill_to_done_s for r in results if r.kill_to_done_s is not None]
    failed = [r for r in results if not r.ok]
    return {
        "rounds": len(results),
        "rounds_asked": rounds_asked,
        "seed": seed,
        "jobs": dict(Counter(r.job for r in results)),
        "kills": {k: kills.get(k, 0) for k in KINDS},
        "missed_kills": sum(1 for r in results if not r.killed),
        "recoveries": sum(r.recoveries for r in results),
        "daemon_restarts_after_kill": sum(r.daemon_restarts for r in results),
        "orders": sum(r.orders for r in results),
        "lost": sum(r.verdict.lost for r in results),
        "duplicated": sum(r.verdict.duplicated for r in results),
        "quarantined": sum(r.verdict.quarantined for r in results),
        "carrier_repeated_requests": sum(
            int(r.verdict.info.get("carrier_repeated_requests", 0)) for r in results
        ),
        "kill_to_done_s": {
            "max": round(max(times), 1) if times else None,
            "median": round(statistics.median(times), 1) if times else None,
        },
        "failed_rounds": [
            {
                "round": r.number,
                "job": r.job,
                "kind": r.kind,
                "kill": r.kill_detail,
                "lost": r.verdict.lost,
                "duplicated": r.verdict.duplicated,
                "problems": r.verdict.problems[:3],
            }
            for r in failed
        ],
        "ok": not failed and len(results) == rounds_asked,
        "elapsed_s": round(elapsed_s, 1),
    }


def _quiet(world: World, log: Log, timeout_s: float = 180.0) -> None:
    """Before a round: no run of an earlier round may still be running (its writes would
    land in this round's tables), and the daemon must have a code server again (after a
    code server was killed, the daemon starts a new one only on its next workspace refresh;
    a run dequeued before that fails to launch)."""
    harness = world.harness
    deadline = time.monotonic() + timeout_s
    while True:
        if not harness.daemon_alive():
            log("daemon not running; starting it")
            harness.start_daemon()
        try:
            busy = len(harness.instance.get_runs(RunsFilter(statuses=IN_FLIGHT)))
        except Exception:  # (Postgres may be coming back up)
            busy = -1
        if busy == 0 and harness.code_server_pids():
            return
        if time.monotonic() > deadline:
            log(f"warning: deployment not quiet after {timeout_s:.0f}s (runs busy: {busy})")
            return
        time.sleep(1.0)


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    # The same unwinding as Ctrl-C: the world's finally blocks stop every child by pid.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the rounds; print the JSON line; 0 when every invariant held."""
    args = parse_args(argv)
    log = Log(lambda line: print(line, file=sys.stderr, flush=True))
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return _run(args, log)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, log: Log) -> int:
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    rng = random.Random(seed)
    kinds = list(args.kinds)
    if not args.in_order:
        rng.shuffle(kinds)
    results: list[RoundResult] = []
    started = time.monotonic()
    log(f"chaos: {args.rounds} rounds, seed {seed}, jobs {args.jobs}, kinds {kinds}")
    try:
        with chaos_world(args.scratch, keep=args.keep) as world:
            install_tracking_log(world.engine)
            log(f"up: postgres {world.postgres.url}, work dir {world.scratch}")
            for number in range(1, args.rounds + 1):
                _quiet(world, log)
                job = args.jobs[(number - 1) % len(args.jobs)]
                kind = kinds[(number - 1) % len(kinds)]
                if not args.in_order and number > len(kinds) and (number - 1) % len(kinds) == 0:
                    rng.shuffle(kinds)
                    kind = kinds[0]
                kind = _not_skipped(job, kind, kinds, args.skip)
                results.append(play_round(world, number, job, kind, rng, log))
                failures = sum(1 for r in results if not r.ok)
                if args.max_failures and failures > args.max_failures:
                    log(f"stopping: {failures} failed rounds")
                    break
    except KeyboardInterrupt:
        log("interrupted; every process was stopped")
    except Exception as error:  # (reported in the JSON line, exit 2)
        log(f"error: {type(error).__name__}: {error}")
        summary = summarize(results, seed, time.monotonic() - started, args.rounds)
        summary["error"] = f"{type(error).__name__}: {error}"
        print(json.dumps(summary), flush=True)
        return 2
    summary = summarize(results, seed, time.monotonic() - started, args.rounds)
    print(json.dumps(summary), flush=True)
    return 0 if summary["ok"] else 1
