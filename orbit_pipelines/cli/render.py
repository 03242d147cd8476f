"""Human text and JSON for run groups: the shapes `check-interrupted` and `status` print."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from orbit_pipelines.recovery.explain import first_line
from orbit_pipelines.recovery.overview import GroupOverview, StepView
from orbit_pipelines.store.recoveries import Recovery
from orbit_pipelines.store.urls import mask_secrets


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
        # What a person looks for first: a tracking or reference number, then the rest.
        keys = sorted(result, key=lambda k: (not any(w in k for w in ("tracking", "ref")), k))
        text = ", ".join(f"{k.replace('_number', '')}: {result[k]}" for k in keys[:2])
    else:
        text = json.dumps(result, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_bar(done: int, total: int | None, width: int = 30) -> str:
    """``[#########.........] 47/200 (23%)``"""
    if not total:
        return f"{done:,} rows"
    filled = min(width, int(width * done / total))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} ({100 * done // total}%)"


def _position(group: GroupOverview) -> str:
    focus = group.focus
    if focus is None or not (focus.rows_done or focus.rows_total):
        return ""
    return f" at row {_n(focus.rows_done)}/{_n(focus.rows_total)}"


def _error_line(group: GroupOverview) -> str | None:
    if group.explained is not None:
        return f"Last error: {group.explained.line()}"
    return None


def _options(group: GroupOverview) -> list[str]:
    run = group.latest_run_id
    again = group.effects_that_would_repeat
    repeat = (
        f" ({again:,} side effect(s) already happened and would happen again!)"
        if again
        else " (no side effect has happened yet)"
    )
    lines = [
        "Options:",
        f"  [resume]  orbit resume {run}   - continue from where it stopped",
        f"  [restart] orbit restart {run}  - start over from the beginning{repeat}",
        f"  [cancel]  orbit cancel {run}   - abandon this job (undo: --undo)",
    ]
    if group.in_doubt:
        lines.append(f"  [effects] orbit effects {run}  - see and settle the effects in doubt")
    return lines


def interrupted_text(group: GroupOverview) -> str:
    """The block `check-interrupted` prints for one group (the reference prompt of issue 15)."""
    focus = group.focus
    step = f" in step {focus.step_key}" if focus else ""
    state = f"{group.state}, before the lookback" if group.before_lookback else group.state
    lines = [f"Job '{group.job_name}' was interrupted{_position(group)}{step} ({state})."]
    lines.append(f"  run {group.latest_run_id} (run group {group.root_run_id})")
    lines.append(
        f"  run started at {_when(group.started_at)}; last activity at {_when(group.last_activity)}"
    )
    if group.last_done is not None:
        detail = describe_result(group.last_done.result)
        lines.append(
            f"Last completed: row {group.last_done.row_key}" + (f" ({detail})" if detail else "")
        )
    if group.remaining_rows is not None:
        lines.append(f"Remaining: {group.remaining_rows:,} rows")
    error = _error_line(group)
    if error:
        lines.append(error)
    if group.in_doubt:
        lines.append(f"In doubt: {len(group.in_doubt)} side effect(s) need reconciling:")
        lines.extend(
            f"  {e.effect_key} ({e.receiver}, row {e.row_key})" for e in group.in_doubt[:5]
        )
    lines.append(f"Recovery: {group.plan}")
    if focus is not None and focus.rows_done:
        lines.append(
            f"  a resume skips the {focus.rows_done:,} done row(s) of {focus.step_key} "
            "and retries from the failed row"
        )
    lines.extend(_options(group))
    return "\n".join(lines)


def _step_line(step: StepView) -> str:
    rows = ", ".join(f"{n:,} {status}" for status, n in sorted(step.rows.items())) or "no rows"
    line = f"  {step.step_key:<32} {step.status:<12} {rows}"
    if step.status == "IN_PROGRESS" and (step.rows_total or step.rows_done):
        line += "\n    " + progress_bar(step.rows_done, step.rows_total)
    return line


def _recovery_line(rec: Recovery) -> str:
    times = (
        f"detected at {_when(rec.detected_at)}, launched at {_when(rec.launched_at)}, "
        f"finished at {_when(rec.finished_at)}"
    )
    target = f" as {rec.recovery_run_id}" if rec.recovery_run_id else ""
    outcome = f", {first_line(rec.outcome)}" if rec.outcome else ""
    return (
        f"  attempt {rec.attempt}: {rec.reason} run {rec.parent_run_id}{target} "
        f"[{rec.status}{outcome}] by {rec.decided_by}\n    {times}\n"
        f"    {first_line(mask_secrets(rec.detail))}"
    )


def status_text(group: GroupOverview) -> str:
    """`orbit status`: steps, rows per step, recovery history, what happens next."""
    focus = group.focus
    stopped = (
        f"\n  stopped{_position(group)} in step {focus.step_key}"
        if focus and group.state in ("dead", "hung", "failed", "held")
        else ""
    )
    lines = [
        f"Job '{group.job_name}', run group {group.root_run_id}: {group.state}{stopped}",
        f"  latest run {group.latest_run_id} ({group.latest_status}): started at "
        f"{_when(group.started_at)}, last activity at {_when(group.last_activity)}",
        f"  run group started at {_when(group.group_started_at)} "
        f"({len(group.recoveries)} recovery attempt(s) since)",
        "Steps (rows per step in the row ledger):",
    ]
    lines.extend(_step_line(step) for step in group.steps)
    if group.last_done is not None:
        detail = describe_result(group.last_done.result)
        lines.append(
            f"Last completed: row {group.last_done.row_key}" + (f" ({detail})" if detail else "")
        )
    if group.remaining_rows is not None:
        lines.append(f"Remaining: {group.remaining_rows:,} rows")
    error = _error_line(group)
    if error:
        lines.append(error)
    if group.effects:
        counts = ", ".join(f"{n:,} {s}" for s, n in sorted(group.effects.items()))
        lines.append(
            f"Side effects: {counts} (the whole run group, every step and attempt; the row "
            "counts above are per step)"
        )
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
        "failed_step": group.failed_step,
        "position": (
            {"step_key": focus.step_key, "row": focus.rows_done, "of": focus.rows_total}
            if (focus := group.focus) is not None
            else None
        ),
        "remaining_rows": group.remaining_rows,
        "latest_run_started_at": group.started_at,
        "group_started_at": group.group_started_at,
        "last_error": {
            "code": group.explained.code if group.explained else group.error_code,
            "message": group.explained.sentence if group.explained else None,
        },
        "options": [
            {"action": "resume", "command": f"orbit resume {group.latest_run_id}"},
            {
                "action": "restart",
                "command": f"orbit restart {group.latest_run_id}",
                "effects_that_would_repeat": group.effects_that_would_repeat,
            },
            {"action": "cancel", "command": f"orbit cancel {group.latest_run_id}"},
        ],
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
                "outcome": first_line(r.outcome) if r.outcome else None,
                "detail": first_line(mask_secrets(r.detail)),
            }
            for r in group.recoveries
        ],
        "plan": group.plan,
        "before_lookback": group.before_lookback,
        "needs_person": group.needs_person,
    }
