"""`orbit db upgrade`, `orbit db check`, `orbit db prune` and `orbit db stop`."""

from __future__ import annotations

import argparse
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orbit_pipelines.cli.database import resolve_database
from orbit_pipelines.cli.output import EXIT_FAILURE, EXIT_OK, print_json
from orbit_pipelines.errors import E2008_BAD_CONFIG, OrbitError
from orbit_pipelines.store.embedded import embedded_data_dir, embedded_pid, stop_embedded
from orbit_pipelines.store.engine import check_connection, create_store_engine
from orbit_pipelines.store.migrations import require_current, status, upgrade
from orbit_pipelines.store.urls import configured_url, mask_url, orbit_home, resolve_url


def register(subparsers: Any) -> None:
    """Add the `db` command group."""
    db = subparsers.add_parser("db", help="the orbit schema in Postgres")
    db_sub = db.add_subparsers(dest="db_command", metavar="SUBCOMMAND")
    db_sub.required = True

    up = db_sub.add_parser("upgrade", help="apply pending migrations")
    up.set_defaults(handler=cmd_upgrade)

    check = db_sub.add_parser("check", help="exit 1 unless the schema is current (changes nothing)")
    check.add_argument("--json", action="store_true", help="print a JSON object")
    check.set_defaults(handler=cmd_check)

    prune = db_sub.add_parser(
        "prune",
        help="delete what finished run groups stored (outputs, row ledger, effects, heartbeats, "
        "recovery rows); never a recoverable group, one with an effect in doubt or a held "
        "recovery",
    )
    prune.add_argument(
        "--older-than",
        required=True,
        type=parse_age,
        metavar="AGE",
        help="only groups finished longer ago than this: 30d, 12h, 45m, 0s",
    )
    prune.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    prune.add_argument(
        "--include-orphans",
        action="store_true",
        help="also groups none of whose runs Dagster knows (runs deleted, or another "
        "DAGSTER_HOME: check before using)",
    )
    prune.add_argument("--json", action="store_true", help="print a JSON object")
    prune.set_defaults(handler=cmd_prune)

    stop = db_sub.add_parser(
        "stop",
        help="stop the embedded Postgres under $ORBIT_HOME (the next command that needs it "
        "starts it again); a server named by ORBIT_POSTGRES_URL is never touched",
    )
    stop.add_argument("--json", action="store_true", help="print a JSON object")
    stop.set_defaults(handler=cmd_stop)


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop the embedded Postgres if it runs; say what was done either way."""
    data_dir = embedded_data_dir()
    pid = embedded_pid()
    stopped = stop_embedded() if pid is not None else False
    if stopped:
        message = (
            f"stopped the embedded Postgres (pid {pid}, data in {data_dir}); the next orbit "
            "command that needs a database starts it again"
        )
    else:
        message = f"the embedded Postgres (data in {data_dir}) is not running; nothing to stop"
    if configured_url() is not None:
        # Said, because a person who set the URL may expect `db stop` to stop that server.
        message += (
            "; ORBIT_POSTGRES_URL is set, and orbit never stops the server it names "
            f"({mask_url(configured_url() or '')})"
        )
    if args.json:
        print_json({"stopped": stopped, "pid": pid, "data_dir": str(data_dir), "message": message})
    else:
        print(message)
    return EXIT_OK


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Apply pending migrations and say which."""
    url = resolve_database().url
    engine = create_store_engine(url)
    check_connection(engine)
    applied = upgrade(engine)
    state = status(engine)
    engine.dispose()
    print(f"database: {mask_url(url)}")
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
    else:
        print("nothing to apply")
    print(state.describe())
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Report the schema state without changing it."""
    url = resolve_database().url
    engine = create_store_engine(url)
    check_connection(engine)
    state = status(engine)
    engine.dispose()
    if args.json:
        print_json(
            {
                "database": mask_url(url),
                "current": state.current,
                "latest": state.latest,
                "is_current": state.is_current,
                "pending": [f"{m.version:04d}_{m.name}" for m in state.pending],
            }
        )
    else:
        print(f"database: {mask_url(url)}")
        print(state.describe())
    return EXIT_OK if state.is_current else EXIT_FAILURE


_AGE = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> timedelta:
    """``30d`` / ``12h`` / ``45m`` / ``0s`` as a timedelta (argparse type)."""
    match = _AGE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 30d, 12h, 45m or 0s")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete (or with --dry-run, count) everything stored for run groups no re-execution
    can need: outputs, row ledger, tokens, batches, aggregation state, effects, fences,
    heartbeats, recovery rows and decisions. Refuses on a schema this code does not know."""
    from orbit_pipelines.dagster_io.retention import decide, group_rows, prunable_roots, prune

    url = resolve_url()
    engine = create_store_engine(url)
    check_connection(engine)
    # A newer schema may keep group state in tables this code does not know of: deleting
    # what it knows would leave the rest half-deleted.
    require_current(engine)
    cutoff = datetime.now(UTC) - args.older_than
    decisions = decide(_dagster_instance(url), engine, cutoff, include_orphans=args.include_orphans)
    roots = prunable_roots(decisions)
    if args.dry_run:
        with engine.connect() as conn:
            rows = group_rows(conn, roots)
        size = sum(d.usage.size_bytes for d in decisions if d.prune)
    else:
        with engine.begin() as conn:
            rows, size = prune(conn, roots)
    engine.dispose()
    outputs = rows.get("step_outputs", 0)
    kept: dict[str, int] = {}
    for decision in decisions:
        if not decision.prune:
            kept[decision.verdict] = kept.get(decision.verdict, 0) + 1
    if args.json:
        print_json(
            {
                "database": mask_url(url),
                "dry_run": args.dry_run,
                "cutoff": cutoff.isoformat(),
                "groups_pruned": len(roots),
                "outputs_deleted": outputs,
                "bytes_freed": size,
                "rows_deleted": rows,
                "groups_kept": kept,
                "groups": [
                    {
                        "root_run_id": d.usage.root_run_id,
                        "verdict": d.verdict,
                        "reason": d.reason,
                        "outputs": d.usage.outputs,
                        "bytes": d.usage.size_bytes,
                    }
                    for d in decisions
                ],
            }
        )
        return EXIT_OK
    print(f"database: {mask_url(url)}")
    for decision in decisions:
        action = ("would delete" if args.dry_run else "deleted") if decision.prune else "kept"
        print(
            f"{action} {decision.usage.root_run_id}: {decision.usage.outputs} outputs, "
            f"{decision.usage.size_bytes} bytes ({decision.reason})"
        )
    verb = "would delete" if args.dry_run else "deleted"
    kept_text = ", ".join(f"{n} {why}" for why, n in sorted(kept.items())) or "none"
    per_table = ", ".join(f"{table} {n}" for table, n in rows.items() if n) or "nothing"
    print(
        f"{verb} {outputs} outputs of {len(roots)} run groups, {size} bytes "
        f"(space returns to the OS after VACUUM); kept groups: {kept_text}"
    )
    print(f"{verb} rows: {per_table}")
    return EXIT_OK


def _dagster_instance(url: str) -> Any:
    """The Dagster instance whose run statuses decide (DAGSTER_HOME, else `orbit dev`'s)."""
    from dagster import DagsterInstance

    from orbit_pipelines.dagster_io.dagster_home import dagster_env

    home_text = os.environ.get("DAGSTER_HOME")
    home = Path(home_text) if home_text else orbit_home() / "dagster_home"
    if not (home / "dagster.yaml").is_file():
        raise OrbitError(
            E2008_BAD_CONFIG,
            f"no Dagster instance at {home}: prune needs run statuses to know which run "
            "groups are finished",
            hint="set DAGSTER_HOME to the home your Dagster webserver and daemon use",
        )
    # dagster.yaml reads the database from the environment, in psycopg2 form.
    os.environ.update(dagster_env(home, url, base={}))
    return DagsterInstance.from_config(str(home))
