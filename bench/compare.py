"""Compare crash recovery: orbit_pipelines vs Dagster's from-failure retry vs DBOS.

The same job for each system: N rows (10,000 by default), one effect per row delivered to a
Postgres receiver table with no unique constraint, and a SIGKILL of the process doing the
work when it reaches row N/2, after that row's effect left and before the system could
record it. Each system recovers by its own mechanism (see ``_systems`` and
``_orbit_system``). For each system: wall time of a crash-free run, rows redone after the
kill (handler calls beyond N), duplicate effects seen by the receiver, rows/s.

    python bench/compare.py [--rows 10000] [--systems orbit,dagster,dbos] [--markdown]

Prints one JSON line per system, then one JSON line of ratios (orbit vs each other system);
the markdown table goes to stderr, or to stdout after the JSON with ``--markdown``.
Everything runs in fresh databases on ``ORBIT_POSTGRES_URL`` (default: the local server),
dropped at the end; every worker runs in its own process group and is killed by pid.
DBOS needs the ``bench`` extra: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Scenario, admin_url, create_receiver, fresh_databases, tally
from _orbit_system import OrbitSystem, orbit_unavailable
from _row_work import AFTER_EFFECT, BEFORE_EFFECT
from _systems import DagsterSystem, DbosSystem, System

from orbit_pipelines.processes import ChildProcesses
from orbit_pipelines.store.engine import connect_store

ALL_SYSTEMS = ("orbit", "dagster", "dbos")
COLUMNS = (
    ("system", "system"),
    ("rows", "rows"),
    ("wall_s_no_crash", "wall s, no crash"),
    ("rows_per_s", "rows/s"),
    ("rows_redone_after_kill", "rows redone after kill"),
    ("duplicate_effects", "duplicate effects"),
    ("wall_s_with_kill", "wall s, kill + recovery"),
)


def system_classes() -> dict[str, type[System] | str]:
    """Each system's driver, or why it cannot run here."""
    missing = orbit_unavailable()
    return {
        "orbit": missing if missing else OrbitSystem,
        "dagster": DagsterSystem,
        "dbos": DbosSystem,
    }


def measure(system: System, rows: int, kill_at: int, kill_point: str) -> dict[str, Any]:
    """Run the clean and the crash scenario of one system; return its JSON line."""
    system.prepare()
    # The machine is shared: the load when a system starts says how far to trust its times.
    load_before = os.getloadavg()[0]
    clean = Scenario(f"{system.name}_clean", rows, system.db_url, system.workdir)
    crash = Scenario(
        f"{system.name}_kill",
        rows,
        system.db_url,
        system.workdir,
        kill_at=kill_at,
        kill_point=kill_point,
    )
    wall_clean = system.run_clean(clean)
    clean_tally = tally(clean)
    wall_kill = system.run_crash(crash)
    kill_tally = tally(crash)
    return {
        "system": system.name,
        "rows": rows,
        "wall_s_no_crash": round(wall_clean, 3),
        "rows_per_s": round(rows / wall_clean, 1),
        "rows_redone_after_kill": kill_tally.rows_redone(rows),
        "duplicate_effects": kill_tally.duplicate_effects,
        "wall_s_with_kill": round(wall_kill, 3),
        # Correctness checks beside the four numbers asked for: nothing lost, clean run exact.
        "missing_effects_after_kill": rows - kill_tally.distinct_effects,
        "clean_run_invocations": clean_tally.invocations,
        "clean_run_duplicate_effects": clean_tally.duplicate_effects,
        "kill_at_row": kill_at,
        "kill_point": kill_point,
        "load_avg_1m_before": round(load_before, 2),
        "crash_and_recovery": system.crash_and_recovery,
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    """orbit's numbers divided by each other system's (None where the divisor is 0)."""
    by_name = {r["system"]: r for r in results if "wall_s_no_crash" in r}
    out: dict[str, Any] = {}
    orbit = by_name.get("orbit")
    for name, other in by_name.items():
        if name == "orbit" or orbit is None:
            continue
        out[f"orbit_vs_{name}"] = {
            key: _ratio(orbit[key], other[key])
            for key in (
                "wall_s_no_crash",
                "rows_per_s",
                "wall_s_with_kill",
                "rows_redone_after_kill",
                "duplicate_effects",
            )
        }
    return {"ratios": out, "note": "orbit / other; null where the other's value is 0"}


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The results as a markdown table (systems that could not run say why)."""
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in results:
        if "missing" in r:
            lines.append(f"| {r['system']} | not run: {r['missing']} |" + " |" * (len(COLUMNS) - 2))
            continue
        lines.append("| " + " | ".join(str(r[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=10_000, help="rows in the job (10000)")
    parser.add_argument(
        "--kill-at", type=int, default=None, help="row index at which to SIGKILL (rows/2)"
    )
    parser.add_argument(
        "--kill-point",
        choices=(AFTER_EFFECT, BEFORE_EFFECT),
        default=AFTER_EFFECT,
        help="die after the kill row's effect was delivered (default) or just before it",
    )
    parser.add_argument(
        "--systems",
        default=",".join(ALL_SYSTEMS),
        help="comma-separated subset of orbit,dagster,dbos",
    )
    parser.add_argument(
        "--orbit-receiver",
        choices=("transactional", "unsafe"),
        default="transactional",
        help="how orbit delivers the effect: in its batch transaction (the receiver is in the "
        "same database; default) or as an outside call with intent + reconcile",
    )
    parser.add_argument(
        "--orbit-batch-size", type=int, default=1000, help="orbit's rows per commit (1000)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table on stdout too")
    parser.add_argument("--workdir", type=Path, default=None, help="keep worker logs here")
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(args.systems) - set(ALL_SYSTEMS))
    if unknown or not args.systems:
        parser.error(f"unknown systems {unknown}; choose from {','.join(ALL_SYSTEMS)}")
    if args.rows < 2:
        parser.error("--rows must be at least 2")
    if args.kill_at is None:
        args.kill_at = args.rows // 2
    if not 0 <= args.kill_at < args.rows:
        parser.error("--kill-at must be a row index below --rows")
    return args


def run(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """Measure every requested system in fresh databases; print each JSON line as it lands."""
    classes = system_classes()
    results: list[dict[str, Any]] = []
    suffixes = ["main", *(["dbos"] if "dbos" in args.systems else [])]
    with fresh_databases(admin_url(), *suffixes) as urls, ChildProcesses() as children:
        connect_store(urls["main"]).dispose()  # the orbit schema, migrated once, untimed
        create_receiver(urls["main"])
        for name in args.systems:
            cls = classes[name]
            if isinstance(cls, str):
                result: dict[str, Any] = {"system": name, "rows": args.rows, "missing": cls}
            else:
                system_dir = workdir / name
                system_dir.mkdir(parents=True, exist_ok=True)
                system = cls(children, system_dir, urls)
                if isinstance(system, OrbitSystem):
                    system.receiver = args.orbit_receiver
                    system.batch_size = args.orbit_batch_size
                result = measure(system, args.rows, args.kill_at, args.kill_point)
                if isinstance(system, OrbitSystem):
                    result["orbit_receiver"] = system.receiver
                    result["orbit_batch_size"] = system.batch_size
            results.append(result)
            print(json.dumps(result), flush=True)
    return results


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM unwinds the with-blocks: workers killed by pid, bench databases dropped.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; a worker that misbehaves raises (exit 1) after cleaning up."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        results = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="orbit-bench-") as tmp:
            results = run(args, Path(tmp))
    print(json.dumps(ratios(results)), flush=True)
    table = markdown_table(results)
    print(table, file=sys.stdout if args.markdown else sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
