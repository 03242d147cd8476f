"""Recovery metrics: what the sensor found, what it recovered, and how fast.

Read from ``orbit.recoveries`` (one row per failed run that got a decision), the
heartbeats (the last beat of a killed run is the best estimate of when it died) and
Dagster's run records (the recovery run's plan and end time): a fixed number of queries
whatever the number of recoveries.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import DagsterInstance, RunsFilter
from sqlalchemy import Connection, func, select

from orbit_pipelines.store.tables import done_batches, heartbeats, recoveries, step_rows

_IN_PROGRESS = ("launching", "launched")


@dataclass(frozen=True)
class Percentiles:
    """p50 / p95 of a duration in seconds, over ``n`` samples (None when there are none)."""

    n: int
    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class RecoveryMetrics:
    """The figures `orbit metrics` prints."""

    since: datetime
    detected: dict[str, int]
    recovered: int
    failed: int
    held: int
    in_progress: int
    steps_reexecuted_per_recovery: float | None
    rows_reexecuted_per_recovery: float | None
    kill_to_launch_s: Percentiles
    kill_to_success_s: Percentiles
    per_job: dict[str, int] = field(default_factory=dict)

    @property
    def detected_total(self) -> int:
        """Failed runs that got a decision, whatever the reason."""
        return sum(self.detected.values())

    @property
    def success_rate(self) -> float | None:
        """Recoveries that succeeded among those that ended (None before the first ended)."""
        ended = self.recovered + self.failed
        return round(self.recovered / ended, 4) if ended else None

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types."""
        data = asdict(self)
        data["since"] = self.since.isoformat()
        data["detected_total"] = self.detected_total
        data["success_rate"] = self.success_rate
        return data


def percentiles(values: list[float]) -> Percentiles:
    """Nearest-rank p50 and p95."""
    if not values:
        return Percentiles(0, None, None)
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p * len(ordered)) - 1)], 2)

    return Percentiles(len(ordered), rank(0.50), rank(0.95))


def recovery_metrics(
    instance: DagsterInstance, conn: Connection, *, since: timedelta
) -> RecoveryMetrics:
    """The metrics of the recoveries detected in the last ``since``."""
    cutoff = datetime.now(UTC) - since
    rows = conn.execute(select(recoveries).where(recoveries.c.detected_at >= cutoff)).mappings()
    recs = [dict(r) for r in rows]
    detected: dict[str, int] = {}
    per_job: dict[str, int] = {}
    for rec in recs:
        detected[rec["reason"]] = detected.get(rec["reason"], 0) + 1
        per_job[rec["job_name"]] = per_job.get(rec["job_name"], 0) + 1
    parents = [r["parent_run_id"] for r in recs]
    launched = [r["recovery_run_id"] for r in recs if r["recovery_run_id"]]

    # When did each parent die? Its last heartbeat; a run without one (no row step) ended
    # when Dagster recorded its end.
    last_beat: dict[str, datetime] = {}
    if parents:
        beats = select(heartbeats.c.run_id, func.max(heartbeats.c.beat_at)).where(
            heartbeats.c.run_id.in_(parents)
        )
        last_beat = {run_id: at for run_id, at in conn.execute(beats.group_by(heartbeats.c.run_id))}
    rows_by_run: dict[str, int] = {}
    if launched:
        # Rows recorded one by one, and done rows recorded per batch (counted, not unnested).
        for counted in (
            select(step_rows.c.run_id, func.count())
            .where(step_rows.c.run_id.in_(launched))
            .group_by(step_rows.c.run_id),
            select(done_batches.c.run_id, func.sum(done_batches.c.row_count))
            .where(done_batches.c.run_id.in_(launched))
            .group_by(done_batches.c.run_id),
        ):
            for run_id, n in conn.execute(counted):
                rows_by_run[run_id] = rows_by_run.get(run_id, 0) + int(n)
    records = {
        r.dagster_run.run_id: r
        for r in (
            instance.get_run_records(filters=RunsFilter(run_ids=parents + launched))
            if parents
            else []
        )
    }

    def died_at(parent: str) -> datetime | None:
        if parent in last_beat:
            return last_beat[parent]
        record = records.get(parent)
        if record is not None and record.end_time:
            return datetime.fromtimestamp(record.end_time, UTC)
        return None

    to_launch: list[float] = []
    to_success: list[float] = []
    steps: list[int] = []
    for rec in recs:
        death = died_at(rec["parent_run_id"])
        if death is not None and rec["launched_at"] is not None:
            to_launch.append(max(0.0, (rec["launched_at"] - death).total_seconds()))
        if death is not None and rec["status"] == "succeeded" and rec["finished_at"] is not None:
            to_success.append(max(0.0, (rec["finished_at"] - death).total_seconds()))
        run = records.get(rec["recovery_run_id"] or "")
        if run is not None and run.dagster_run.step_keys_to_execute is not None:
            steps.append(len(run.dagster_run.step_keys_to_execute))
    n_launched = len(launched)
    return RecoveryMetrics(
        since=cutoff,
        detected=detected,
        recovered=sum(1 for r in recs if r["status"] == "succeeded"),
        failed=sum(1 for r in recs if r["status"] == "failed"),
        held=sum(1 for r in recs if r["status"] == "held"),
        in_progress=sum(1 for r in recs if r["status"] in _IN_PROGRESS),
        steps_reexecuted_per_recovery=round(sum(steps) / len(steps), 2) if steps else None,
        rows_reexecuted_per_recovery=(
            round(sum(rows_by_run.values()) / n_launched, 2) if n_launched else None
        ),
        kill_to_launch_s=percentiles(to_launch),
        kill_to_success_s=percentiles(to_success),
        per_job=per_job,
    )


def prometheus_text(metrics: RecoveryMetrics) -> str:
    """The metrics in Prometheus' text exposition format (gauges over the window)."""
    lines = [
        "# HELP orbit_recoveries_detected Failed runs given a recovery decision, by reason.",
        "# TYPE orbit_recoveries_detected gauge",
    ]
    lines += [
        f'orbit_recoveries_detected{{reason="{reason}"}} {n}'
        for reason, n in sorted(metrics.detected.items())
    ]
    simple = {
        "orbit_recoveries_succeeded": (metrics.recovered, "Recovery runs that succeeded."),
        "orbit_recoveries_failed": (metrics.failed, "Recovery runs that failed."),
        "orbit_recoveries_held": (metrics.held, "Failed runs held for a person."),
        "orbit_recoveries_in_progress": (metrics.in_progress, "Recoveries launching or running."),
        "orbit_recovery_success_ratio": (metrics.success_rate, "Succeeded / ended recoveries."),
        "orbit_recovery_steps_reexecuted_avg": (
            metrics.steps_reexecuted_per_recovery,
            "Steps re-executed per recovery run.",
        ),
        "orbit_recovery_rows_reexecuted_avg": (
            metrics.rows_reexecuted_per_recovery,
            "Rows written by a recovery run, per recovery.",
        ),
    }
    for name, (value, help_text) in simple.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines.append(f"{name} {'NaN' if value is None else value}")
    for name, pct in (
        ("orbit_recovery_kill_to_launch_seconds", metrics.kill_to_launch_s),
        ("orbit_recovery_kill_to_success_seconds", metrics.kill_to_success_s),
    ):
        lines += [
            f"# HELP {name} Seconds from the kill (last heartbeat).",
            f"# TYPE {name} summary",
        ]
        for q, v in (("0.5", pct.p50), ("0.95", pct.p95)):
            lines.append(f'{name}{{quantile="{q}"}} {"NaN" if v is None else v}')
        lines.append(f"{name}_count {pct.n}")
    return "\n".join(lines) + "\n"
