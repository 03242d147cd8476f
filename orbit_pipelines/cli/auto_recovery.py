"""`orbit auto-recovery [on|off]`: the switch that stops (or restarts) automatic recovery
everywhere. Per job, the `orbit/auto_recover: "false"` tag does the same for one job."""

from __future__ import annotations

import argparse
from typing import Any

from orbit_pipelines.cli.database import resolve_database
from orbit_pipelines.cli.output import EXIT_OK, print_json
from orbit_pipelines.store.engine import connect_store
from orbit_pipelines.store.recoveries import auto_recovery_enabled, set_auto_recovery


def register(subparsers: Any) -> None:
    """Add the `auto-recovery` command."""
    parser = subparsers.add_parser(
        "auto-recovery",
        help="show, or turn on/off, automatic recovery by the sensor for every job",
    )
    parser.add_argument(
        "state", nargs="?", choices=("on", "off"), help="omit to show the current state"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(handler=cmd_auto_recovery)


def cmd_auto_recovery(args: argparse.Namespace) -> int:
    """Flip the switch when asked, then report it; the sensor reads it on every tick."""
    url = resolve_database().url
    engine = connect_store(url)
    try:
        with engine.begin() as conn:
            if args.state is not None:
                set_auto_recovery(conn, args.state == "on")
            enabled = auto_recovery_enabled(conn)
    finally:
        engine.dispose()
    if args.json:
        print_json({"auto_recovery": enabled})
        return EXIT_OK
    if enabled:
        print("automatic recovery is ON: the sensor re-executes dead, hung and failed runs")
    else:
        print(
            "automatic recovery is OFF everywhere: the sensor only reports; "
            "use `orbit check-interrupted` and `orbit resume RUN_ID`"
        )
    return EXIT_OK
