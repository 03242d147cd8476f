"""Run-group commands: check-interrupted, status, resume, restart, cancel, recover, effects.

Each command opens the store and the Dagster instance, calls ``orbit_pipelines.recovery``
(the same functions the sensor uses) and prints. Exit codes: 0 ok, 1 something needs a
person, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dagster import DagsterRun, DagsterRunStatus

from orbit_pipelines.cli.context import RunContext, open_run_context
from orbit_pipelines.cli.output import EXIT_FAILURE, EXIT_OK, print_json, print_usage_error
from orbit_pipelines.cli.render import interrupted_text, overview_json, status_text
from orbit_pipelines.cli.watch import watch
from orbit_pipelines.errors import (
    E1010_UNKNOWN_RUN,
    E1011_NOT_INTERRUPTED,
    E1012_NOT_CONFIRMED,
    OrbitError,
)
from orbit_pipelines.recovery.cycle import run_cycle
from orbit_pipelines.recovery.detect import detect
from orbit_pipelines.recovery.launch import launch
from orbit_pipelines.recovery.manual import cancel_group, restart_group
from orbit_pipelines.recovery.overview import (
    group_overview,
    interrupted_groups,
    interrupted_listing,
)
from orbit_pipelines.recovery.policy import switched_off
from orbit_pipelines.recovery.settle import mark_failed, terminate_hung
from orbit_pipelines.store.effect_ledger import effects_in_doubt, resolve_effect
from orbit_pipelines.store.recoveries import (
    effect_root,
    get_recovery,
    group_control,
    open_effect_keys,
    recoveries_for_group,
    release_effect_holds,
    set_group_control,
)
from orbit_pipelines.store.urls import mask_secrets


def register(subparsers: Any) -> None:
    """Add the run-group commands."""
    check = subparsers.add_parser(
        "check-interrupted", help="run groups that are dead, hung, failed or held"
    )
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(handler=cmd_check_interrupted)

    status = subparsers.add_parser("status", help="one run group: steps, rows, recoveries")
    status.add_argument("run_id", help="any run of the group")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument(
        "--watch",
        action="store_true",
        help="a live progress line per running step until the run group ends "
        "(exit 0 succeeded, 1 a person is needed)",
    )
    status.add_argument(
        "--interval", type=float, default=2.0, help="seconds between refreshes of --watch"
    )
    status.set_defaults(handler=cmd_status)

    resume = subparsers.add_parser("resume", help="re-execute from failure now")
    resume.add_argument("run_id")
    resume.set_defaults(handler=cmd_resume)

    restart = subparsers.add_parser("restart", help="start the job over from scratch")
    restart.add_argument("run_id")
    restart.add_argument("--yes", action="store_true", help="confirm without asking")
    restart.set_defaults(handler=cmd_restart)

    cancel = subparsers.add_parser(
        "cancel", help="stop a run and abandon its group (`--undo` takes it back)"
    )
    cancel.add_argument("run_id")
    cancel.add_argument(
        "--yes", action="store_true", help="confirm abandoning a group that already succeeded"
    )
    cancel.add_argument(
        "--undo", action="store_true", help="un-abandon the group: recovery may act on it again"
    )
    cancel.add_argument("--json", action="store_true", help="print JSON")
    cancel.set_defaults(handler=cmd_cancel)

    recover = subparsers.add_parser("recover", help="the sensor's decision, for every group, now")
    recover.add_argument(
        "--auto-resume", action="store_true", help="act (without it, only show the plan)"
    )
    recover.add_argument("--max", type=int, default=None, help="launch at most N recoveries")
    recover.add_argument("--json", action="store_true", help="print JSON")
    recover.set_defaults(handler=cmd_recover)

    effects = subparsers.add_parser(
        "effects",
        help="`effects RUN_ID`: in-doubt effects; `effects resolve KEY --succeeded|--failed`",
    )
    effects.add_argument("words", nargs="+", metavar="RUN_ID | resolve KEY")
    outcome = effects.add_mutually_exclusive_group()
    outcome.add_argument("--succeeded", action="store_true", help="the effect did happen")
    outcome.add_argument("--failed", action="store_true", help="the effect did not happen")
    effects.add_argument("--json", action="store_true", help="print JSON")
    effects.set_defaults(handler=cmd_effects)


def _with_context(args: argparse.Namespace, body: Any) -> int:
    ctx = open_run_context()
    try:
        code: int = body(ctx, args)
        return code
    finally:
        ctx.close()


def _latest_run(ctx: RunContext, run_id: str) -> tuple[str, DagsterRun, DagsterRun]:
    """(root id, root run, latest run) of the group ``run_id`` belongs to."""
    if ctx.instance.get_run_by_id(run_id) is None:
        raise OrbitError(
            E1010_UNKNOWN_RUN,
            f"no run with id {run_id}",
            hint="`orbit check-interrupted` lists the runs that need attention",
        )
    overview = group_overview(ctx.instance, ctx.engine, run_id, ctx.settings)
    root = ctx.instance.get_run_by_id(overview.root_run_id)
    latest = ctx.instance.get_run_by_id(overview.latest_run_id)
    assert root is not None and latest is not None
    return overview.root_run_id, root, latest


def cmd_check_interrupted(args: argparse.Namespace) -> int:
    """List interrupted groups and what recovery will do; exit 1 if one needs a person."""

    def body(ctx: RunContext, args: argparse.Namespace) -> int:
        listing = interrupted_listing(ctx.instance, ctx.engine, ctx.settings)
        groups = listing.groups
        cut = (
            None
            if listing.older_complete
            else f"failures before the recovery sensor's lookback: only the newest "
            f"{listing.older_scanned:,} were looked at; older ones are not listed "
            "(`orbit status RUN_ID` answers for any run)"
        )
        if args.json:
            print_json(
                {
                    "interrupted": [overview_json(g) for g in groups],
                    "before_lookback_scan": {
                        "failures_scanned": listing.older_scanned,
                        "complete": listing.older_complete,
                    },
                }
            )
        elif not groups:
            print("No interrupted runs." + (f"\nNote: {cut}" if cut else ""))
        else:
            print("\n\n".join(interrupted_text(g) for g in groups))
            if cut:
                print(f"\nNote: {cut}")
        return EXIT_FAILURE if any(g.needs_person for g in groups) else EXIT_OK

    return _with_context(args, body)


def cmd_status(args: argparse.Namespace) -> int:
    """One group in detail; with ``--watch``, its live progress until it ends."""
    if args.watch and args.json:
        return print_usage_error(
            "--watch prints live text; `orbit status RUN_ID --json` gives one snapshot",
            "usage: orbit status RUN_ID [--json | --watch [--interval S]]",
            as_json=True,
        )
    if args.interval <= 0:
        return print_usage_error("--interval must be more than 0", "", as_json=args.json)

    def body(ctx: RunContext, args: argparse.Namespace) -> int:
        if ctx.instance.get_run_by_id(args.run_id) is None:
            raise OrbitError(E1010_UNKNOWN_RUN, f"no run with id {args.run_id}")
        if args.watch:
            return watch(ctx, args.run_id, args.interval)
        candidates = {c.run_id: c for c in _candidates(ctx)}
        overview = group_overview(ctx.instance, ctx.engine, args.run_id, ctx.settings)
        if overview.latest_run_id in candidates:
            overview = group_overview(
                ctx.instance,
                ctx.engine,
                args.run_id,
                ctx.settings,
                candidate=candidates[overview.latest_run_id],
            )
        if args.json:
            print_json(overview_json(overview))
        else:
            print(status_text(overview))
        return EXIT_FAILURE if overview.needs_person else EXIT_OK

    return _with_context(args, body)


def _candidates(ctx: RunContext) -> list[Any]:
    with ctx.engine.connect() as conn:
        return detect(ctx.instance, conn, ctx.settings)


def cmd_resume(args: argparse.Namespace) -> int:
    """Re-execute the group's latest failed run from failure, through the sensor's launch."""

    def body(ctx: RunContext, args: argparse.Namespace) -> int:
        root_id, _root, latest = _latest_run(ctx, args.run_id)
        if latest.status in (DagsterRunStatus.STARTED, DagsterRunStatus.STARTING):
            stuck = {c.run_id: c for c in _candidates(ctx)}.get(latest.run_id)
            if stuck is None and latest.run_id != root_id:
                print(_already_recovering(ctx, latest))
                return EXIT_OK
            if stuck is None:
                raise OrbitError(
                    E1011_NOT_INTERRUPTED,
                    f"run {latest.run_id} is running and alive; nothing to resume",
                    hint=f"`orbit status {latest.run_id}` shows its progress",
                )
            if stuck.reason == "hung":
                terminate_hung(ctx.instance, stuck, ctx.settings)
            mark_failed(ctx.instance, latest.run_id, stuck.reason, stuck.detail)
        elif latest.run_id != root_id and latest.status in _PENDING:
            # The sensor (or another `orbit resume`) got there first: the group's recovery
            # exists and has not run yet. What the person asked for is happening.
            print(_already_recovering(ctx, latest))
            return EXIT_OK
        elif latest.status not in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            raise OrbitError(
                E1011_NOT_INTERRUPTED,
                f"run group {root_id} is {latest.status.value}; nothing to resume",
            )
        with ctx.engine.begin() as conn:
            # A person resuming overrides an earlier `orbit cancel` of this group.
            set_group_control(conn, root_id, abandoned=False)
        result = launch(
            ctx.instance,
            ctx.engine,
            latest.run_id,
            decided_by="cli",
            reason="manual",
            detail="orbit resume",
            settings=ctx.settings,
            release_held=True,
        )
        print(result.message)
        if result.recovery_run_id:
            print(f"follow it: orbit status {result.recovery_run_id}")
        return EXIT_OK

    return _with_context(args, body)


_PENDING = (DagsterRunStatus.NOT_STARTED, DagsterRunStatus.QUEUED)


def _already_recovering(ctx: RunContext, recovery_run: DagsterRun) -> str:
    parent = recovery_run.parent_run_id or "?"
    with ctx.engine.connect() as conn:
        decision = get_recovery(conn, parent) if recovery_run.parent_run_id else None
    decided_by = decision.decided_by if decision else "?"
    return (
        f"run {parent} already has a recovery (run {recovery_run.run_id} is "
        f"{recovery_run.status.value}, decided by {decided_by}); nothing to launch\n"
        f"follow it: orbit status {recovery_run.run_id}"
    )


def cmd_restart(args: argparse.Namespace) -> int:
    """Start over, after saying what would happen again; needs --yes or a typed confirmation."""

    def body(ctx: RunContext, args: argparse.Namespace) -> int:
        root_id, root, latest = _latest_run(ctx, args.run_id)
        overview = group_overview(ctx.instance, ctx.engine, root_id, ctx.settings)
        happened = overview.effects.get("succeeded", 0)
        print(
            f"Run group {root_id} ('{overview.job_name}'): {overview.rows_done:,} rows done, "
            f"{happened:,} side effects already happened."
        )
        if happened:
            print(f"Restarting may perform those {happened:,} side effects again.")
        if latest.status in (DagsterRunStatus.STARTED, DagsterRunStatus.QUEUED):
            print(f"Run {latest.run_id} is still {latest.status.value}; `orbit cancel` it first.")
            return EXIT_FAILURE
        if not args.yes and not _confirmed("restart"):
            raise OrbitError(
                E1012_NOT_CONFIRMED,
                "restart not confirmed; nothing changed",
                hint=f"run `orbit restart {args.run_id} --yes` to start over",
            )
        new_run = restart_group(ctx.instance, ctx.engine, root)
        print(f"started run {new_run} (a new run group); the old group is abandoned")
        return EXIT_OK

    return _with_context(args, body)


def _confirmed(word: str) -> bool:
    if not sys.stdin.isatty():
        return False
    answer = input(f"Type '{word}' to confirm: ")
    return answer.strip() == word


def cmd_cancel(args: argparse.Namespace) -> int:
    """Stop the group's latest run and mark the group abandoned; ``--undo`` reverses that.

    A group that already succeeded has nothing to stop: abandoning it only hides it, so that
    needs ``--yes``.
    """

    def body(ctx: RunContext, args: argparse.Namespace) -> int:
        root_id, _root, latest = _latest_run(ctx, args.run_id)
        if args.undo:
            return _uncancel(ctx, root_id, args.json)
        if latest.status == DagsterRunStatus.SUCCESS and not args.yes:
            raise OrbitError(
                E1012_NOT_CONFIRMED,
                f"run group {root_id} already succeeded (run {latest.run_id}); there is "
                "nothing to stop, and abandoning it would only mark it abandoned",
                hint=f"`orbit cancel {args.run_id} --yes` if you mean it "
                f"(`orbit cancel {args.run_id} --undo` takes it back)",
            )
        result = cancel_group(ctx.instance, ctx.engine, root_id, latest, ctx.settings)
        if args.json:
            print_json(
                {
                    "root_run_id": root_id,
                    "run_id": result.run_id,
                    "was": result.was,
                    "note": result.note,
                    "abandoned": True,
                }
            )
            return EXIT_OK
        print(f"run {result.run_id} was {result.was}: {result.note}")
        print(f"run group {root_id} abandoned; automatic recovery leaves it alone")
        print(f"undo: orbit cancel {args.run_id} --undo")
        return EXIT_OK

    return _with_context(args, body)


def _uncancel(ctx: RunContext, root_id: str, as_json: bool) -> int:
    with ctx.engine.begin() as conn:
        control = group_control(conn, root_id)
        was_abandoned = control is not None and control.abandoned_at is not None
        if was_abandoned:
            set_group_control(
                conn, root_id, abandoned=False, note="un-abandoned by orbit cancel --undo"
            )
    if not was_abandoned:
        raise OrbitError(
            E1011_NOT_INTERRUPTED,
            f"run group {root_id} is not abandoned; nothing to undo",
        )
    if as_json:
        print_json({"root_run_id": root_id, "abandoned": False})
    else:
        print(
            f"run group {root_id} is no longer abandoned; automatic recovery (and "
            "`orbit resume`) may act on it again"
        )
    return EXIT_OK


def cmd_recover(args: argparse.Namespace) -> int:
    """Make the sensor's decision for every interrupted group now (at most --max launches)."""
    if args.max is not None and args.max < 1:
        return print_usage_error("--max must be at least 1", "", as_json=args.json)

    def body(ctx: RunContext, args: argparse.Namespace) -> int:
        if not args.auto_resume:
            groups = interrupted_groups(ctx.instance, ctx.engine, ctx.settings)
            if args.json:
                print_json(
                    {
                        "acted": False,
                        "interrupted": [
                            {
                                "root_run_id": g.root_run_id,
                                "latest_run_id": g.latest_run_id,
                                "job_name": g.job_name,
                                "state": g.state,
                                "plan": g.plan,
                                "before_lookback": g.before_lookback,
                                "needs_person": g.needs_person,
                            }
                            for g in groups
                        ],
                    }
                )
                return EXIT_FAILURE if any(g.needs_person for g in groups) else EXIT_OK
            for group in groups:
                print(f"{group.latest_run_id} ({group.job_name}, {group.state}): {group.plan}")
            print(f"{len(groups)} interrupted; add --auto-resume to act")
            return EXIT_FAILURE if any(g.needs_person for g in groups) else EXIT_OK
        outcomes = run_cycle(
            ctx.instance, ctx.engine, ctx.settings, decided_by="cli", max_launches=args.max
        )
        summary = {
            "detected": sum(1 for o in outcomes if o.action != "finished"),
            "recovered": sum(1 for o in outcomes if o.action == "launched"),
            "held": sum(1 for o in outcomes if o.action == "held"),
            "waiting": sum(1 for o in outcomes if o.action in ("waiting", "deferred")),
            "failed": sum(1 for o in outcomes if o.action == "error"),
        }
        if args.json:
            print_json({"acted": True, **summary, "decisions": [o.__dict__ for o in outcomes]})
        else:
            for outcome in outcomes:
                print(outcome.line())
            print(", ".join(f"{k} {v}" for k, v in summary.items()))
        return EXIT_FAILURE if summary["held"] or summary["failed"] else EXIT_OK

    return _with_context(args, body)


def _resolve(ctx: RunContext, key: str, outcome: str, as_json: bool) -> int:
    """Settle one effect and, when its group has nothing left in doubt, release the group's
    hold in the same transaction, so what is printed is what the sensor will find."""
    released: list[str] = []
    with ctx.engine.begin() as conn:
        root = effect_root(conn, key)
        changed = resolve_effect(conn, key, outcome, resolved_by="cli")
        if not changed or root is None:
            raise OrbitError(
                E1011_NOT_INTERRUPTED,
                f"effect {key} is not in doubt (or does not exist)",
                hint="`orbit effects RUN_ID` lists a run group's effects in doubt",
            )
        left = open_effect_keys(conn, root)
        if not left:
            released = release_effect_holds(conn, [root])
        held = [r for r in recoveries_for_group(conn, root) if r.status == "held"]
        root_run = ctx.instance.get_run_by_id(root)
        off = switched_off(conn, root, dict(root_run.tags) if root_run else {})
    follow = f"`orbit status {root}` follows it"
    if left:
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        next_step = (
            f"{len(left)} side effect(s) still in doubt in run group {root}: {shown}; "
            "recovery waits until each is settled (`orbit effects resolve KEY "
            "--succeeded|--failed`)"
        )
    elif off is not None and (released or held):
        next_step = (
            f"nothing left in doubt, but {off}: the recovery sensor will not resume run group "
            f"{root}; resume it yourself: orbit resume {root}"
        )
    elif released:
        next_step = (
            f"nothing left in doubt; the recovery sensor will resume run group {root} at its "
            f"next tick (within {ctx.settings.interval_s}s); {follow}"
        )
    elif held:
        why = held[0].outcome or held[0].detail.split("| held: ", 1)[-1]
        next_step = (
            f"nothing left in doubt, but run group {root} is still held: {mask_secrets(why)}; "
            f"when that is fixed: orbit resume {root}"
        )
    else:
        next_step = f"nothing left in doubt in run group {root}; nothing was held; {follow}"
    if as_json:
        print_json(
            {
                "effect_key": key,
                "outcome": outcome,
                "root_run_id": root,
                "still_in_doubt": left,
                "released": released,
                "next": next_step,
            }
        )
    else:
        print(f"effect {key} settled as {outcome}")
        print(next_step)
    return EXIT_OK


def cmd_effects(args: argparse.Namespace) -> int:
    """List in-doubt effects of a group, or settle one by hand."""

    def body(ctx: RunContext, args: argparse.Namespace) -> int:
        words: list[str] = args.words
        if words[0] == "resolve":
            if len(words) != 2 or not (args.succeeded or args.failed):
                return print_usage_error(
                    "resolve needs one KEY and --succeeded or --failed",
                    "usage: orbit effects resolve KEY --succeeded|--failed",
                    as_json=args.json,
                )
            return _resolve(ctx, words[1], "succeeded" if args.succeeded else "failed", args.json)
        if len(words) != 1:
            return print_usage_error(
                "effects takes one RUN_ID", "usage: orbit effects RUN_ID", as_json=args.json
            )
        root_id, _root, _latest = _latest_run(ctx, words[0])
        with ctx.engine.connect() as conn:
            open_effects = effects_in_doubt(conn, root_id)
        if args.json:
            print_json({"root_run_id": root_id, "in_doubt": [e.__dict__ for e in open_effects]})
        elif not open_effects:
            print(f"No effects in doubt in run group {root_id}.")
        else:
            print(f"{len(open_effects)} effect(s) in doubt in run group {root_id}:")
            for effect in open_effects:
                print(
                    f"  {effect.effect_key}  {effect.receiver}  step {effect.step_key}  row {effect.row_key}"
                )
            print("Settle one: orbit effects resolve KEY --succeeded|--failed")
        return EXIT_FAILURE if open_effects else EXIT_OK

    return _with_context(args, body)
