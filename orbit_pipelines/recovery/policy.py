"""May we recover this run now, later, or only with a person? One pure-ish decision.

Order of the checks matters: switches first (a person said no), then the error (retrying
cannot help), then side effects in doubt (retrying could do harm), then the attempt budget,
then backoff (not yet).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from orbit_pipelines.errors import is_retryable, lookup
from orbit_pipelines.recovery.detect import Candidate
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.effect_ledger import effects_in_doubt
from orbit_pipelines.store.recoveries import (
    attempts_used,
    auto_recovery_enabled,
    group_control,
)

AUTO_RECOVER_TAG = "orbit/auto_recover"


@dataclass(frozen=True)
class Decision:
    """What to do with a candidate: 'launch', 'wait' (backoff), 'hold' (a person must act)
    or 'skip' (automatic recovery is switched off for it)."""

    action: str
    why: str
    attempt: int
    not_before: datetime | None = None


def backoff_s(run_id: str, attempt: int, settings: RecoverySettings) -> float:
    """Delay before recovery ``attempt`` (1-based): none for the first, then base * 2^(n-2),
    capped, with a jitter that is fixed per run so every tick agrees on the same time."""
    if attempt <= 1:
        return 0.0
    delay = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 2))
    digest = hashlib.sha256(run_id.encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64  # [0, 1)
    return max(0.0, delay * (1 + settings.backoff_jitter * (2 * unit - 1)))


def switched_off(conn: Connection, root_run_id: str, tags: dict[str, str]) -> str | None:
    """Why automatic recovery must not touch this run group, or None."""
    if not auto_recovery_enabled(conn):
        return "automatic recovery is off everywhere (orbit.settings auto_recovery=false)"
    if tags.get(AUTO_RECOVER_TAG, "").strip().lower() == "false":
        return f"automatic recovery is off for this job (tag {AUTO_RECOVER_TAG}=false)"
    control = group_control(conn, root_run_id)
    if control is not None and control.abandoned_at is not None:
        return f"run group abandoned at {control.abandoned_at:%Y-%m-%d %H:%M:%S}"
    if control is not None and not control.auto_recover:
        return "automatic recovery is off for this run group"
    return None


def decide(
    conn: Connection,
    candidate: Candidate,
    settings: RecoverySettings,
    *,
    now: datetime | None = None,
) -> Decision:
    """The policy decision for one candidate (reads switches, budget and effects)."""
    now = now or datetime.now(UTC)
    attempt = attempts_used(conn, candidate.root_run_id) + 1
    off = switched_off(conn, candidate.root_run_id, candidate.tags)
    if off is not None:
        return Decision("skip", off, attempt)
    if not is_retryable(candidate.error_code):
        known = lookup(candidate.error_code or "")
        title = f" ({known.title})" if known else ""
        return Decision(
            "hold",
            f"{candidate.error_code}{title} is never retried automatically; needs a person",
            attempt,
        )
    doubtful = effects_in_doubt(conn, candidate.root_run_id)
    if doubtful:
        keys = ", ".join(f"{e.effect_key} [{e.receiver}, {e.status}]" for e in doubtful[:5])
        more = f" and {len(doubtful) - 5} more" if len(doubtful) > 5 else ""
        return Decision(
            "hold",
            f"{len(doubtful)} side effect(s) in doubt: {keys}{more}; reconcile before resuming",
            attempt,
        )
    if attempt > settings.max_attempts:
        return Decision(
            "hold",
            f"attempt budget used up ({settings.max_attempts} recoveries); needs a person",
            attempt,
        )
    failed_at = candidate.failed_at or now
    not_before = failed_at + timedelta(seconds=backoff_s(candidate.run_id, attempt, settings))
    if now < not_before:
        wait_s = (not_before - now).total_seconds()
        return Decision(
            "wait", f"attempt {attempt} backs off {wait_s:.0f}s more", attempt, not_before
        )
    return Decision("launch", f"attempt {attempt} of {settings.max_attempts}", attempt, not_before)
