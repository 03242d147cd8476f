"""`orbit demo`: the one-command tour (see orbit_pipelines/demo.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from orbit_pipelines.cli.output import EXIT_FAILURE, EXIT_OK
from orbit_pipelines.demo import DemoOptions, run_demo


def register(subparsers: Any) -> None:
    """Add the `demo` command."""
    demo = subparsers.add_parser(
        "demo", help="ship orders, kill a worker partway, let the sensor recover it, report"
    )
    demo.add_argument("--orders", type=int, default=DemoOptions.orders, help="orders to ship")
    demo.add_argument("--shards", type=int, default=DemoOptions.shards, help="parallel shards")
    demo.add_argument(
        "--kill-after", type=int, default=DemoOptions.kill_after_rows, help="rows before the kill"
    )
    demo.add_argument("--timeout", type=float, default=DemoOptions.timeout_s, help="seconds")
    demo.add_argument("--json", action="store_true", help="print the report as one JSON object")
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 only when every order shipped exactly once."""
    if args.orders < 1 or args.shards < 1 or args.kill_after < 1:
        print("error: --orders, --shards and --kill-after must be at least 1", file=sys.stderr)
        return 2
    options = DemoOptions(args.orders, args.shards, args.kill_after, args.timeout)
    # Progress goes to stderr so that --json leaves stdout to the report alone.
    report = run_demo(options, log=lambda line: print(f"orbit demo: {line}", file=sys.stderr))
    print(report.as_json() if args.json else report.as_text())
    return EXIT_OK if report.ok else EXIT_FAILURE
