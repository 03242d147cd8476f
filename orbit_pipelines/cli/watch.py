"""`orbit status RUN_ID --watch`: a live progress line per running step until the group ends.

The reattach a person wants after closing a terminal: for every step in progress, rows done
of the total, rows/s, ETA, the heartbeat's age and where it runs (host, pid); then the
outcome. It follows the run group, not one run: when a run dies and the recovery sensor
re-executes it, the watch goes on with the recovery run. It stops when the group succeeded
(exit 0) or when nothing automatic will happen any more (held, switched off, abandoned:
exit 1, a person is needed). Ctrl-C stops watching, never the run.

On a terminal the lines are redrawn in place; otherwise (a pipe, a log file) each refresh
prints its lines once, prefixed with the time, so the output reads as a log.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from dagster import DagsterRunStatus

from orbit_pipelines.cli.context import RunContext
from orbit_pipelines.cli.output import EXIT_FAILURE, EXIT_OK
from orbit_pipelines.recovery.detect import detect
from orbit_pipelines.recovery.overview import GroupOverview, StepView, group_overview

_ACTIVE = {
    DagsterRunStatus.QUEUED.value,
    DagsterRunStatus.NOT_STARTED.value,
    DagsterRunStatus.STARTING.value,
    DagsterRunStatus.STARTED.value,
    DagsterRunStatus.CANCELING.value,
}
# Rows/s is measured over this window of refreshes (seconds): long enough to smooth batch
# commits, short enough to follow a step that slows down.
RATE_WINDOW_S = 30.0


@dataclass
class _Rates:
    """Rows done per (run, step) at each refresh, for rows/s."""

    samples: dict[tuple[str, str], deque[tuple[float, int]]] = field(default_factory=dict)

    def add(self, key: tuple[str, str], at: float, rows: int) -> float | None:
        """Record a sample; the rate over the window, once two samples span a second."""
        window = self.samples.setdefault(key, deque())
        window.append((at, rows))
        while len(window) > 2 and at - window[0][0] > RATE_WINDOW_S:
            window.popleft()
        first_at, first_rows = window[0]
        if at - first_at < 1.0:
            return None
        return max(0.0, (rows - first_rows) / (at - first_at))


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def step_line(step: StepView, rate: float | None, now: datetime, stale_after_s: float) -> str:
    """One running step: ``send 47/200 rows (23%)  3.1 rows/s  ETA 49s  heartbeat 1s ago  host h pid 7``."""
    done, total = step.rows_done, step.rows_total
    rows = f"{done:,}/{total:,} rows ({100 * done // total}%)" if total else f"{done:,} rows"
    speed = f"{rate:,.1f} rows/s" if rate is not None else "rows/s: measuring"
    if rate and total:
        eta = f"ETA {_duration((total - done) / rate)}"
    elif total and done >= total:
        eta = "ETA 0s"
    else:
        eta = "ETA ?"
    parts = [step.step_key, rows, speed, eta]
    beat = step.beat
    if beat is None:
        parts.append("no heartbeat yet")
    else:
        age = (now - beat.beat_at).total_seconds()
        stale = (
            f" (stale: the worker may be dead; recovery decides after {stale_after_s:.0f}s)"
            if age > stale_after_s
            else ""
        )
        parts += [f"heartbeat {_duration(age)} ago{stale}", f"host {beat.host} pid {beat.pid}"]
    return "  ".join(parts)


def _running_steps(group: GroupOverview) -> list[StepView]:
    """Steps in progress in the group's latest run (a beat of an older run is history)."""
    return [
        s
        for s in group.steps
        if s.status == "IN_PROGRESS" and (s.beat is None or s.beat.run_id == group.latest_run_id)
    ]


def _outcome(group: GroupOverview) -> str:
    if group.state == "succeeded":
        return (
            f"run group {group.root_run_id} succeeded: run {group.latest_run_id} SUCCESS, "
            f"{group.rows_done:,} rows done, {len(group.recoveries)} recovery attempt(s)"
        )
    error = f"; {group.explained.line()}" if group.explained else ""
    return (
        f"run group {group.root_run_id} is {group.state} (run {group.latest_run_id} "
        f"{group.latest_status}){error}\nNext: {group.plan}\n"
        f"details: orbit status {group.latest_run_id}"
    )


class _Screen:
    """Prints refreshes: redrawn in place on a terminal, appended (timestamped) elsewhere."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.drawn = 0

    def refresh(self, lines: list[str]) -> None:
        if self.tty:
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F")  # back to the first line drawn
                # Fewer steps running than last time: blank the lines left below.
                lines = lines + [""] * (self.drawn - len(lines))
            for line in lines:
                self.out.write(f"\x1b[2K{line}\n")
            self.drawn = len(lines)
        else:
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            for line in lines:
                self.out.write(f"{stamp}  {line}\n")
        self.out.flush()

    def say(self, text: str) -> None:
        """A line that stays (not redrawn)."""
        self.drawn = 0
        self.out.write(text + "\n")
        self.out.flush()


def watch(ctx: RunContext, run_id: str, interval_s: float, out: TextIO | None = None) -> int:
    """Watch the group of ``run_id`` until it ends; the exit code of its outcome."""
    screen = _Screen(out or sys.stdout)
    rates = _Rates()
    watched: str | None = None
    told_failure: str | None = None
    try:
        while True:
            group = group_overview(ctx.instance, ctx.engine, run_id, ctx.settings)
            if group.latest_run_id != watched:
                what = "watching" if watched is None else "now watching"
                screen.say(
                    f"{what} run {group.latest_run_id} of run group {group.root_run_id} "
                    f"(job '{group.job_name}'); Ctrl-C stops watching, not the run"
                )
                watched = group.latest_run_id
            if group.latest_status in _ACTIVE:
                screen.refresh(_progress(group, rates, ctx.settings.heartbeat_timeout_s))
            elif group.state == "succeeded":
                screen.say(_outcome(group))
                return EXIT_OK
            elif group.state != "recovering":
                decided = _with_decision(ctx, group)
                automatic = decided.decision is not None and decided.decision.action in (
                    "launch",
                    "wait",
                )
                if not automatic:
                    screen.say(_outcome(decided))
                    return EXIT_FAILURE
                if told_failure != decided.latest_run_id:
                    screen.say(
                        f"run {decided.latest_run_id} ended {decided.latest_status} "
                        f"({decided.state}); {decided.plan}; watching for the recovery run"
                    )
                    told_failure = decided.latest_run_id
            time.sleep(interval_s)
    except KeyboardInterrupt:
        screen.say(
            f"stopped watching; the run goes on (orbit status {watched or run_id} --watch "
            "to watch again)"
        )
        return 130


def _progress(group: GroupOverview, rates: _Rates, stale_after_s: float) -> list[str]:
    now = datetime.now(UTC)
    at = time.monotonic()
    steps = _running_steps(group)
    if not steps:
        return [f"run {group.latest_run_id} is {group.latest_status}; no step has started yet"]
    return [
        step_line(
            step,
            rates.add((group.latest_run_id, step.step_key), at, step.rows_done),
            now,
            stale_after_s,
        )
        for step in steps
    ]


def _with_decision(ctx: RunContext, group: GroupOverview) -> GroupOverview:
    """The group with the sensor's decision about its failed run (what happens next)."""
    with ctx.engine.connect() as conn:
        mine = [
            c
            for c in detect(ctx.instance, conn, ctx.settings)
            if c.root_run_id == group.root_run_id
        ]
    if not mine:
        return group
    return group_overview(
        ctx.instance, ctx.engine, group.latest_run_id, ctx.settings, candidate=mine[0]
    )
