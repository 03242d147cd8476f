"""`orbit metrics` (what recovery did, how fast) and `orbit doctor` (can it work, do the
ledgers agree with Dagster)."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from orbit_pipelines.cli.context import RunContext, open_run_context
from orbit_pipelines.cli.db import parse_age
from orbit_pipelines.cli.output import EXIT_FAILURE, EXIT_OK, print_json
from orbit_pipelines.recovery.doctor import run_doctor
from orbit_pipelines.recovery.metrics import RecoveryMetrics, prometheus_text, recovery_metrics


def register(subparsers: Any) -> None:
    """Add `metrics` and `doctor`."""
    metrics = subparsers.add_parser("metrics", help="recovery metrics over a time window")
    metrics.add_argument(
        "--since", type=parse_age, default=timedelta(days=7), metavar="AGE", help="7d (default)"
    )
    shape = metrics.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print JSON")
    shape.add_argument("--prometheus", action="store_true", help="Prometheus text format")
    metrics.set_defaults(handler=cmd_metrics)

    doctor = subparsers.add_parser(
        "doctor", help="configuration, schema, connections, ledger consistency; exit 1 on any"
    )
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.set_defaults(handler=cmd_doctor)


def _p(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def _metrics_text(m: RecoveryMetrics) -> str:
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(m.detected.items())) or "none"
    rate = "-" if m.success_rate is None else f"{100 * m.success_rate:.1f}%"
    return "\n".join(
        [
            f"Recovery since {m.since:%Y-%m-%d %H:%M} UTC:",
            f"  detected:   {m.detected_total} ({reasons})",
            f"  recovered:  {m.recovered}, failed: {m.failed}, held for a person: {m.held}, "
            f"in progress: {m.in_progress}",
            f"  success rate: {rate}",
            f"  re-executed per recovery: {_p(m.steps_reexecuted_per_recovery, ' steps')}, "
            f"{_p(m.rows_reexecuted_per_recovery, ' rows')}",
            f"  kill -> launch:  p50 {_p(m.kill_to_launch_s.p50)}, p95 "
            f"{_p(m.kill_to_launch_s.p95)} (n={m.kill_to_launch_s.n})",
            f"  kill -> success: p50 {_p(m.kill_to_success_s.p50)}, p95 "
            f"{_p(m.kill_to_success_s.p95)} (n={m.kill_to_success_s.n})",
        ]
    )


def cmd_metrics(args: argparse.Namespace) -> int:
    """Print the metrics of the recoveries detected in the window."""
    ctx: RunContext = open_run_context()
    try:
        with ctx.engine.connect() as conn:
            metrics = recovery_metrics(ctx.instance, conn, since=args.since)
    finally:
        ctx.close()
    if args.json:
        print_json(metrics.as_json())
    elif args.prometheus:
        print(prometheus_text(metrics), end="")
    else:
        print(_metrics_text(metrics))
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run every check; exit 1 when any problem was found."""
    ctx = open_run_context(migrate=False)
    try:
        report = run_doctor(ctx.instance, ctx.engine, ctx.settings)
    finally:
        ctx.close()
    if args.json:
        print_json(report.as_json())
    elif not report.problems:
        print(f"No problems ({', '.join(report.checks)} checked).")
    else:
        print(f"{len(report.problems)} problem(s):")
        for problem in report.problems:
            print(f"  [{problem.check}] {problem.problem}\n      fix: {problem.fix}")
    return EXIT_FAILURE if report.problems else EXIT_OK
