"""`orbit demo`: the one-command tour.

The scenario is an example (the carrier, the ``shipments`` job, what the report checks), so
it lives in the ``orbit_examples`` package (``orbit_examples/demo.py``), which the product
never imports at module level: this command imports it when it runs, says clearly what to
install when it is absent, and hands it to the deployment in ``demo_runner.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from orbit_pipelines.cli.output import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from orbit_pipelines.errors import OrbitError
from orbit_pipelines.store.embedded import embedded_data_dir, embedded_pid
from orbit_pipelines.store.urls import POSTGRES_URL_ENV, configured_url, parse_url

MISSING_EXAMPLES = (
    "error: orbit demo needs the orbit_examples package, which ships with orbit_pipelines' "
    "source tree: run `pip install -e .` in a checkout of orbit_pipelines"
)


def _examples_demo() -> ModuleType | None:
    """``orbit_examples.demo``, or None when the examples are not installed."""
    try:
        # The one place the product reaches into the examples, lazily (see test_public_api).
        from orbit_examples import demo
    except ModuleNotFoundError as missing:
        if missing.name is not None and missing.name.startswith("orbit_examples"):
            return None
        raise
    return demo


def register(subparsers: Any) -> None:
    """Add the `demo` command."""
    demo_module = _examples_demo()
    demo = subparsers.add_parser(
        "demo",
        help="ship orders, kill a worker partway, let the sensor recover it, report",
        description="Exit code 0 only when the run group succeeded, the carrier made no "
        "duplicate shipment and every order carries the tracking number the carrier "
        "assigned to it.",
    )
    if demo_module is None:
        demo.set_defaults(handler=_cmd_missing_examples)
        return
    DemoOptions = demo_module.DemoOptions
    DEMO_DATABASE = demo_module.DEMO_DATABASE
    demo.add_argument("--orders", type=int, default=DemoOptions.orders, help="orders to ship")
    demo.add_argument("--shards", type=int, default=DemoOptions.shards, help="parallel shards")
    demo.add_argument(
        "--kill-after", type=int, default=DemoOptions.kill_after_rows, help="rows before the kill"
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=DemoOptions.timeout_s,
        help="seconds to wait for the run group to finish",
    )
    demo.add_argument(
        "--database",
        default=None,
        help=f"demo database, dropped and recreated (default ${demo_module.DEMO_DATABASE_ENV}, "
        f"else {DEMO_DATABASE}; must start with {DEMO_DATABASE})",
    )
    demo.add_argument(
        "--sensor-interval",
        type=int,
        default=None,
        help=f"recovery sensor interval in seconds (default ${demo_module.INTERVAL_ENV}, "
        f"else {demo_module.DEMO_SENSOR_INTERVAL_S})",
    )
    demo.add_argument("--json", action="store_true", help="print the report as one JSON object")
    demo.set_defaults(handler=cmd_demo)


def choose_database(
    given: str | None,
    env: Mapping[str, str],
    default_env: str,
    allowed: Callable[[str], str],
) -> tuple[str | None, str | None]:
    """(database name for the demo, a note for the person) from ``--database``, the demo's
    own variable, then the database named in ``ORBIT_POSTGRES_URL``.

    The demo drops and recreates its database, so the URL's database is used only when its
    name says it is a demo database (``allowed`` accepts it); otherwise the demo says which
    one it uses instead, on the same server, and why. None: the demo's default."""
    if given or env.get(default_env):
        return given or env.get(default_env), None
    url = env.get(POSTGRES_URL_ENV)
    if not url:
        return None, None
    try:
        named = parse_url(url).database
    except OrbitError:
        return None, None  # the demo reports the bad URL itself, as every command does
    if not named:
        return None, None
    try:
        return allowed(named), None
    except OrbitError:
        return None, (
            f"ORBIT_POSTGRES_URL names database '{named}'; the demo drops and recreates the "
            "database it uses, so it uses its own on the same server instead "
            "(--database orbit_demo_NAME chooses it)"
        )


def embedded_note(was_running: bool) -> str | None:
    """What the demo leaves behind when it used the embedded Postgres, and how to stop it."""
    if configured_url() is not None:
        return None
    pid = embedded_pid()
    if pid is None:
        return None
    started = "it was running already" if was_running else "the demo started it"
    return (
        f"the embedded Postgres (pid {pid}, data in {embedded_data_dir()}) keeps running "
        f"({started}) so that `orbit dev` and the commands above find the demo's runs; "
        "stop it with `orbit db stop`"
    )


def _cmd_missing_examples(args: argparse.Namespace) -> int:
    print(MISSING_EXAMPLES, file=sys.stderr)
    return EXIT_FAILURE


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 only when every order shipped exactly once, tracked."""
    # Here, not at the top: the runner imports all of Dagster, which choose_database and
    # embedded_note (imported on their own by tests) do not need.
    from orbit_pipelines.cli.demo_runner import run_demo

    if args.orders < 1 or args.shards < 1 or args.kill_after < 1:
        print("error: --orders, --shards and --kill-after must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.sensor_interval is not None and args.sensor_interval < 1:
        print("error: --sensor-interval must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    demo_module = _examples_demo()
    if demo_module is None:
        return _cmd_missing_examples(args)
    chosen, note = choose_database(
        args.database, os.environ, demo_module.DEMO_DATABASE_ENV, demo_module.demo_database_name
    )
    options = demo_module.DemoOptions(
        orders=args.orders,
        shards=args.shards,
        kill_after_rows=args.kill_after,
        timeout_s=args.timeout,
        database=demo_module.demo_database_name(chosen),
        sensor_interval_s=args.sensor_interval,
    )

    # Progress goes to stderr so that --json leaves stdout to the report alone.
    def log(line: str) -> None:
        print(f"orbit demo: {line}", file=sys.stderr, flush=True)

    if note:
        log(note)
    embedded_before = configured_url() is None and embedded_pid() is not None
    try:
        report = run_demo(demo_module, options, log=log)
    except KeyboardInterrupt:
        log("interrupted; every process it started is stopped")
        left = embedded_note(embedded_before)
        if left:
            log(left)
        raise
    print(report.as_json() if args.json else report.as_text(), flush=True)
    left = embedded_note(embedded_before)
    if left:
        log(left)
    if report.reason is not None:
        print(f"error: orbit demo: {report.reason}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
