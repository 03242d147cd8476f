"""May we recover this run now, later, or only with a person? One pure-ish decision.

Order of the checks matters: switches first (a person said no), then the error (retrying
cannot help), then side effects in doubt (retrying could do harm), then the attempt budget,
then backoff (not yet).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from orbit_pipelines.errors import is_retryable, lookup
from orbit_pipelines.recovery.detect import Candidate
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.recoveries import EFFECTS_HOLD_MARK, PolicyFacts, policy_facts
from orbit_pipelines.tags import AUTO_RECOVER_TAG


@dataclass(frozen=True)
class Decision:
    """What to do with a candidate: 'launch', 'wait' (backoff), 'hold' (a person must act)
    or 'skip' (automatic recovery is switched off for it).

    ``depends`` is what would change the decision, so that a remembered one is looked at
    again only then: 'final' (launch, hold), 'backoff' (at ``not_before``), 'switch_global',
    'switch_group' (when that switch is on again) or 'switch_tag' (never: the run's tags).
    A hold for side effects in doubt is 'final' too, but its ``why`` starts with the count
    and ``EFFECTS_HOLD_MARK``: once none is left in doubt it is released (see
    ``store.recoveries.release_effect_holds``).
    """

    action: str
    why: str
    attempt: int
    not_before: datetime | None = None
    depends: str = "final"


def backoff_s(run_id: str, attempt: int, settings: RecoverySettings) -> float:
    """Delay before recovery ``attempt`` (1-based): none for the first, then base * 2^(n-2),
    capped, with a jitter that is fixed per run so every tick agrees on the same time."""
    if attempt <= 1:
        return 0.0
    delay = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 2))
    digest = hashlib.sha256(run_id.encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64  # [0, 1)
    return max(0.0, delay * (1 + settings.backoff_jitter * (2 * unit - 1)))


def _switch(facts: PolicyFacts, root_run_id: str, tags: dict[str, str]) -> tuple[str, str] | None:
    """(depends, why) when automatic recovery must not touch this run group, else None."""
    if not facts.auto_recovery:
        return (
            "switch_global",
            "automatic recovery is off everywhere (orbit.settings auto_recovery=false)",
        )
    if tags.get(AUTO_RECOVER_TAG, "").strip().lower() == "false":
        return (
            "switch_tag",
            f"automatic recovery is off for this job (tag {AUTO_RECOVER_TAG}=false)",
        )
    control = facts.controls.get(root_run_id)
    if control is not None and control.abandoned_at is not None:
        return "switch_group", f"run group abandoned at {control.abandoned_at:%Y-%m-%d %H:%M:%S}"
    if control is not None and not control.auto_recover:
        return "switch_group", "automatic recovery is off for this run group"
    return None


def switched_off(conn: Connection, root_run_id: str, tags: dict[str, str]) -> str | None:
    """Why automatic recovery must not touch this run group, or None."""
    found = _switch(policy_facts(conn, [root_run_id]), root_run_id, tags)
    return found[1] if found is not None else None


def decide(
    conn: Connection,
    candidate: Candidate,
    settings: RecoverySettings,
    *,
    now: datetime | None = None,
) -> Decision:
    """The policy decision for one candidate (reads switches, budget and effects)."""
    facts = policy_facts(conn, [candidate.root_run_id])
    return decide_with(facts, candidate, settings, now=now)


def decide_many(
    conn: Connection,
    candidates: Sequence[Candidate],
    settings: RecoverySettings,
    *,
    now: datetime | None = None,
) -> list[Decision]:
    """``decide`` for many candidates with the reads batched (four queries in all).

    Candidates of one run group share its attempt count as read before this call: the
    caller launches at most one per group per pass (see ``cycle``)."""
    facts = policy_facts(conn, [c.root_run_id for c in candidates])
    return [decide_with(facts, c, settings, now=now) for c in candidates]


def decide_with(
    facts: PolicyFacts,
    candidate: Candidate,
    settings: RecoverySettings,
    *,
    now: datetime | None = None,
) -> Decision:
    """The decision from facts already read (pure)."""
    now = now or datetime.now(UTC)
    attempt = facts.attempts.get(candidate.root_run_id, 0) + 1
    off = _switch(facts, candidate.root_run_id, candidate.tags)
    if off is not None:
        return Decision("skip", off[1], attempt, depends=off[0])
    if not is_retryable(candidate.error_code):
        known = lookup(candidate.error_code or "")
        title = f" ({known.title})" if known else ""
        return Decision(
            "hold",
            f"{candidate.error_code}{title} is never retried automatically; needs a person",
            attempt,
        )
    doubtful = facts.in_doubt.get(candidate.root_run_id, [])
    if doubtful:
        keys = ", ".join(f"{key} [{receiver}, {status}]" for key, receiver, status in doubtful[:5])
        more = f" and {len(doubtful) - 5} more" if len(doubtful) > 5 else ""
        return Decision(
            "hold",
            f"{len(doubtful)}{EFFECTS_HOLD_MARK}{keys}{more}; settle each with "
            "`orbit effects resolve KEY --succeeded|--failed` and recovery resumes",
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
            "wait",
            f"attempt {attempt} backs off {wait_s:.0f}s more",
            attempt,
            not_before,
            depends="backoff",
        )
    return Decision("launch", f"attempt {attempt} of {settings.max_attempts}", attempt, not_before)
