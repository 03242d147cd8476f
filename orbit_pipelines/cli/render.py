"""Human text and JSON for run groups: the shapes `check-interrupted` and `status` print."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from orbit_pipelines.recovery.overview import GroupOverview, StepView
from orbit_pipelines.store.recoveries import Recovery


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def describe_result(result: Any, limit: int = 60) -> str:
    """A short rendering of a row's recorded result, e.g. ``tracking 1Z...``."""
    if result is None:
        return ""
    if isinstance(result, dict):
        text = ", ".join(f"{k.replace('_number', '')} {v}" for k, v in list(result.items())[:2])
    else:
        text = json.dumps(result, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_bar(done: int, total: int | None, width: int = 30) -> str:
    """``[#########.........] 47/200 (23%)``"""
    if not total:
        return f"{done:,} rows"
    filled = min(width, int(width * done / total))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} ({100 * done // total}%)"


def interrupted_text(group: GroupOverview) -> str:
    """The block `check-interrupted` prints for one group (the shape in issue 6)."""
    focus = next((s for s in group.steps if s.step_key == group.next_step), None)
    done = focus.rows_done if focus else group.rows_done
    total = focus.rows_total if focus else group.rows_total
    where = f" at row {_n(done)}/{_n(total)}" if focus and (done or total) else ""
    step = f" in step {focus.step_key}" if focus else ""
    lines = [f"Job '{group.job_name}' was interrupted{where}{step} ({group.state})."]
    lines.append(f"  run {group.latest_run_id} (group {group.root_run_id})")
    lines.append(f"  started {_when(group.started_at)}, last activity {_when(group.last_activity)}")
    lines.append(
        f"  steps: {group.steps_done} done, {group.steps_failed} failed, next: {group.next_step or '-'}"
    )
    if group.last_done is not None:
        detail = describe_result(group.last_done.result)
        lines.append(
            f"Last completed: row {group.last_done.row_key}" + (f" ({detail})" if detail else "")
        )
    if total is not None:
        lines.append(f"Remaining: {max(0, total - done):,} rows")
    if group.error_code or group.error_message:
        code = f"{group.error_code} " if group.error_code else ""
        lines.append(f"Last error: {code}{group.error_message or ''}".rstrip())
    if group.in_doubt:
        lines.append(f"In doubt: {len(group.in_doubt)} side effect(s) need reconciling:")
        lines.extend(
            f"  {e.effect_key} ({e.receiver}, row {e.row_key})" for e in group.in_doubt[:5]
        )
    lines.append(f"Recovery: {group.plan}")
    happened = group.effects.get("succeeded", 0)
    run = group.latest_run_id
    lines.append("Options:")
    lines.append(f"  orbit resume {run}    continue from where it stopped")
    again = f" ({happened:,} side effects would happen again!)" if happened else ""
    lines.append(f"  orbit restart {run}   start over{again}")
    lines.append(f"  orbit cancel {run}    abandon this run")
    if group.in_doubt:
        lines.append(f"  orbit effects {run}   see and settle the effects in doubt")
    return "\n".join(lines)


def _step_line(step: StepView) -> str:
    rows = ", ".join(f"{n:,} {status}" for status, n in sorted(step.rows.items())) or "no rows"
    line = f"  {step.step_key:<32} {step.status:<12} {rows}"
    if step.status == "IN_PROGRESS" and (step.rows_total or step.rows_done):
        line += "\n    " + progress_bar(step.rows_done, step.rows_total)
    return line


def _recovery_line(rec: Recovery) -> str:
    times = f"{_when(rec.detected_at)} -> {_when(rec.launched_at)} -> {_when(rec.finished_at)}"
    target = f" as {rec.recovery_run_id}" if rec.recovery_run_id else ""
    outcome = f", {rec.outcome}" if rec.outcome else ""
    return (
        f"  attempt {rec.attempt}: {rec.reason} run {rec.parent_run_id}{target} "
        f"[{rec.status}{outcome}] by {rec.decided_by}\n    {times}\n    {rec.detail}"
    )


def status_text(group: GroupOverview) -> str:
    """`orbit status`: steps, rows per step, recovery history, what happens next."""
    lines = [
        f"Job '{group.job_name}', run group {group.root_run_id}: {group.state}",
        f"  latest run {group.latest_run_id} ({group.latest_status}), started "
        f"{_when(group.started_at)}, last activity {_when(group.last_activity)}",
        "Steps:",
    ]
    lines.extend(_step_line(step) for step in group.steps)
    if group.error_code or group.error_message:
        lines.append(f"Last error: {group.error_code or ''} {group.error_message or ''}".strip())
    if group.effects:
        counts = ", ".join(f"{n:,} {s}" for s, n in sorted(group.effects.items()))
        lines.append(f"Side effects: {counts}")
    lines.append("Recoveries:" if group.recoveries else "Recoveries: none")
    lines.extend(_recovery_line(rec) for rec in group.recoveries)
    lines.append(f"Next: {group.plan}")
    return "\n".join(lines)


def overview_json(group: GroupOverview) -> dict[str, Any]:
    """The same facts as the text, for scripts."""
    return {
        "root_run_id": group.root_run_id,
        "job_name": group.job_name,
        "latest_run_id": group.latest_run_id,
        "latest_status": group.latest_status,
        "state": group.state,
        "started_at": group.started_at,
        "last_activity": group.last_activity,
        "rows_done": group.rows_done,
        "rows_total": group.rows_total,
        "steps_done": group.steps_done,
        "steps_failed": group.steps_failed,
        "next_step": group.next_step,
        "steps": [
            {
                "step_key": s.step_key,
                "status": s.status,
                "rows": s.rows,
                "rows_done": s.rows_done,
                "rows_total": s.rows_total,
            }
            for s in group.steps
        ],
        "last_error": {"code": group.error_code, "message": group.error_message},
        "last_completed_row": (
            {"row_key": group.last_done.row_key, "result": group.last_done.result}
            if group.last_done
            else None
        ),
        "in_doubt": [
            {"effect_key": e.effect_key, "receiver": e.receiver, "row_key": e.row_key}
            for e in group.in_doubt
        ],
        "effects": group.effects,
        "recoveries": [
            {
                "attempt": r.attempt,
                "reason": r.reason,
                "parent_run_id": r.parent_run_id,
                "recovery_run_id": r.recovery_run_id,
                "status": r.status,
                "decided_by": r.decided_by,
                "detected_at": r.detected_at,
                "launched_at": r.launched_at,
                "finished_at": r.finished_at,
                "outcome": r.outcome,
                "detail": r.detail,
            }
            for r in group.recoveries
        ],
        "plan": group.plan,
        "needs_person": group.needs_person,
    }
