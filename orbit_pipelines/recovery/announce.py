"""Say in the Dagster UI what orbit decided about a run, where a person looks for it.

Three things, each through Dagster's own storage so that every UI and API shows them:

- an ``ENGINE_EVENT`` in the event log of the run the decision is about (and of its run
  group's root, when that is another run): the reason (dead / hung / failed) with its
  detail, and what orbit did — the recovery run it launched, or why it holds the run and
  what a person must do;
- the same event on a recovery run itself, so its page says what it re-executes and why,
  and on the parent when the recovery run ended (or could not be launched at all);
- the tag ``orbit/decision`` on a held run (shown beside the run in the Runs list),
  overwritten when the run is recovered later.

Dagster shows "Launched by <sensor>" for a run tagged ``dagster/sensor_name`` (the Runs
list) and, with ``dagster/tick`` too, on the run's page (``RunHeaderTags.tsx``, which links
the tick); ``launched_by_tags`` builds both for a sensor evaluation.

Nothing here may stop a recovery: a failure to write an event is logged and swallowed.
Metadata carries ids and short texts only, never a URL (a database URL can hold a password).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dagster import DagsterInstance, DagsterRun, MetadataValue

from orbit_pipelines.errors import lookup
from orbit_pipelines.recovery import dagster_private as dp
from orbit_pipelines.recovery.detect import Candidate
from orbit_pipelines.recovery.explain import first_line
from orbit_pipelines.store.urls import mask_secrets
from orbit_pipelines.tags import DECISION_TAG, SENSOR_NAME_TAG, TICK_ID_TAG, root_run_id_of

_log = logging.getLogger(__name__)

# Every orbit event message starts so: a person can filter the event log by it.
PREFIX = "orbit recovery"
# Dagster stores tag values of any length, but the Runs list shows one line.
_TAG_LIMIT = 240
# "OrbitError: E-3001 ...": the code says what the class name would.
_CODED_CLASS = re.compile(r"\b[A-Z]\w*(?:Error|Exception): (?=E-\d{4})")
# Dagster's wrapper around an op's own exception says nothing about the cause.
_WRAPPER = re.compile(r'(?:\w+: )?Error occurred while executing (?:op|asset) "[^"]*":?\s*')


def launched_by_tags(sensor_name: str, log_key: Sequence[str] | None) -> dict[str, str]:
    """The tags that make Dagster's UI say a run was launched by ``sensor_name``.

    The daemon evaluates a sensor with the log key ``[repository, sensor, tick id]``; the
    tick id is only taken when it is one (an evaluation outside the daemon, e.g. a test's
    ``build_sensor_context``, gets a timestamp there instead).
    """
    tags = {SENSOR_NAME_TAG: sensor_name}
    if log_key and len(log_key) >= 3 and str(log_key[-1]).isdigit():
        tags[TICK_ID_TAG] = str(log_key[-1])
    return tags


def who(decided_by: str) -> str:
    """``sensor:orbit_recovery`` -> "the recovery sensor orbit_recovery"; ``cli`` -> "the
    orbit CLI" (a person's `orbit resume`, or `orbit recover` from a script)."""
    kind, _, name = decided_by.partition(":")
    if kind == "sensor":
        return f"the recovery sensor {name}" if name else "the recovery sensor"
    if kind == "cli":
        return "the orbit CLI"
    return decided_by


def what_to_do(why: str, run_id: str) -> str:
    """What a person must do about a run orbit holds or does not recover, from the policy's
    reason (``policy.decide_with`` words them)."""
    if "in doubt" in why:
        return (
            "check each effect with its receiver, then record what happened: "
            "`orbit effects resolve KEY --succeeded|--failed`; the sensor resumes the run "
            "at its next tick once nothing is in doubt"
        )
    if "attempt budget" in why:
        return (
            f"find why every attempt failed, then `orbit resume {run_id}` for one more attempt, "
            f"`orbit restart {run_id}` to start over, or `orbit cancel {run_id}`"
        )
    if "never retried" in why:
        return f"fix the cause, then `orbit resume {run_id}` (or `orbit cancel {run_id}`)"
    if "could not be launched" in why:
        return f"fix what the error names, then `orbit resume {run_id}`"
    if "abandoned" in why:
        return f"nothing, unless it was a mistake: `orbit resume {run_id}` recovers it"
    return f"`orbit resume {run_id}` recovers it by hand; or switch automatic recovery back on"


def readable_detail(detail: str, code: str | None = None) -> str:
    """``detail`` as a person reads it: its first line, no class path or traceback, not
    Dagster's wrapper sentence ("Error occurred while executing op ..."), and the error
    code with its title when it is known and not said yet.

    A hold's detail carries the policy's words after `` | held: ``; they are said apart.
    """
    text = first_line(detail.split(" | held: ")[0], limit=300)
    text = _WRAPPER.sub("", text).strip().rstrip(":").strip()
    text = _CODED_CLASS.sub("", text)
    if code and code not in text:
        known = lookup(code)
        said = f"{code} ({known.title})" if known else code
        text = f"{text}: {said}" if text else said
    return text


def _cause(reason: str, detail: str) -> str:
    return f"{reason} ({detail})" if detail else reason


def announce_launch(
    instance: DagsterInstance,
    parent: DagsterRun,
    recovery_run_id: str,
    *,
    reason: str,
    detail: str,
    attempt: int,
    decided_by: str,
) -> None:
    """Write the launch decision into the parent's (and root's) event log; a decision tag
    the parent carries from an earlier hold is overwritten."""
    by = who(decided_by)
    detail = readable_detail(detail)
    _event(
        instance,
        _Target.of(parent),
        f"{PREFIX}: run {parent.run_id} was {_cause(reason, detail)}. {_upper(by)} "
        f"launched recovery run {recovery_run_id} (attempt {attempt}), which re-executes it "
        "from the point of failure.",
        _launch_metadata(reason, detail, attempt, decided_by)
        | {"recovery_run": MetadataValue.dagster_run(recovery_run_id)},
        also_root=True,
    )
    if DECISION_TAG in parent.tags:
        _tag(instance, parent.run_id, f"recovered: {by} launched {recovery_run_id}")


def announce_launch_failed(
    instance: DagsterInstance,
    parent: DagsterRun,
    *,
    reason: str,
    detail: str,
    error: BaseException,
    decided_by: str,
) -> None:
    """The recovery run could not be created or queued (``store.recoveries`` holds the run
    for a person): say so on the parent (and root) and tag it, with the error's first line."""
    why = f"its recovery could not be launched: {first_line(str(error)) or type(error).__name__}"
    _announce_hold(instance, _Target.of(parent), reason, readable_detail(detail), why, decided_by)


def announce_recovery_run(
    instance: DagsterInstance,
    recovery_run: DagsterRun,
    parent_run_id: str,
    *,
    reason: str,
    detail: str,
    attempt: int,
    decided_by: str,
) -> None:
    """Write into a new recovery run's event log (before it is queued, so it comes first)
    who launched it, what it re-executes and why."""
    detail = readable_detail(detail)
    _event(
        instance,
        _Target.of(recovery_run),
        f"{PREFIX}: this run was launched by {who(decided_by)} (attempt {attempt}): run "
        f"{parent_run_id} was {_cause(reason, detail)}; this run re-executes it from the point "
        "of failure.",
        _launch_metadata(reason, detail, attempt, decided_by)
        | {"recovery_of": MetadataValue.dagster_run(parent_run_id)},
        also_root=False,
    )


def _launch_metadata(reason: str, detail: str, attempt: int, decided_by: str) -> dict[str, object]:
    return {
        "reason": reason,
        "detail": detail,
        "action": "launched",
        "attempt": attempt,
        "decided_by": decided_by,
    }


def announce_finished(
    instance: DagsterInstance, recovery_run: DagsterRun, parent_run_id: str
) -> None:
    """Write into the parent's (and root's) event log how its recovery run ended: the last
    word of a recovery, where the first one (the launch) was written."""
    status = recovery_run.status.value
    if status == "SUCCESS":
        then = "the run group is recovered"
    else:
        then = "its own failure is decided on like any other (another attempt, or a hold)"
    _event(
        instance,
        _Target(parent_run_id, recovery_run.job_name, root_run_id_of(recovery_run)),
        f"{PREFIX}: recovery run {recovery_run.run_id} of run {parent_run_id} ended {status}: "
        f"{then}.",
        {
            "action": "finished",
            "outcome": status,
            "recovery_run": MetadataValue.dagster_run(recovery_run.run_id),
        },
        also_root=True,
    )


def announce_hold(
    instance: DagsterInstance,
    candidate: Candidate,
    *,
    detail: str,
    why: str,
    decided_by: str,
) -> None:
    """Write a hold (a person must act) into the run's (and root's) event log and tag it.

    ``detail``: the candidate's, with what settling the run did (a hung run's termination).
    The run's facts come from ``candidate``: no read per hold (a tick may hold thousands)."""
    run_id, reason = candidate.run_id, candidate.reason
    detail = readable_detail(detail, candidate.error_code)
    _announce_hold(
        instance,
        _Target(run_id, candidate.job_name, candidate.root_run_id),
        reason,
        detail,
        why,
        decided_by,
    )


def announce_not_recovering(
    instance: DagsterInstance, candidate: Candidate, *, why: str, decided_by: str
) -> None:
    """Write "not recovering" (automatic recovery is switched off for it) into the run's
    (and root's) event log. No tag: a skip is decided again only when its switch changes
    (``scan``), and a run nobody holds needs no mark in the Runs list."""
    run_id, reason = candidate.run_id, candidate.reason
    detail = readable_detail(candidate.detail, candidate.error_code)
    todo = what_to_do(why, run_id)
    _event(
        instance,
        _Target(run_id, candidate.job_name, candidate.root_run_id),
        f"{PREFIX}: run {run_id} was {_cause(reason, detail)}. {_upper(who(decided_by))} "
        f"does not recover it: {why}. What to do: {todo}.",
        {
            "reason": reason,
            "detail": detail,
            "action": "not recovering",
            "why": why,
            "what_to_do": todo,
            "decided_by": decided_by,
        },
        also_root=True,
    )


def _upper(text: str) -> str:
    # str.capitalize() would lower "CLI".
    return text[:1].upper() + text[1:]


def _tag_value(text: str) -> str:
    text = mask_secrets(" ".join(text.split()))
    return text if len(text) <= _TAG_LIMIT else text[: _TAG_LIMIT - 1] + "…"


def _tag(instance: DagsterInstance, run_id: str, text: str) -> None:
    try:
        instance.add_run_tags(run_id, {DECISION_TAG: _tag_value(text)})
    except Exception:  # the decision stands; only its display failed
        _log.exception("could not tag run %s with orbit's decision", run_id)


@dataclass(frozen=True)
class _Target:
    run_id: str
    job_name: str
    root_run_id: str

    @staticmethod
    def of(run: DagsterRun) -> _Target:
        return _Target(run.run_id, run.job_name, root_run_id_of(run))


def _event(
    instance: DagsterInstance,
    run: _Target,
    message: str,
    metadata: Mapping[str, object],
    *,
    also_root: bool,
) -> None:
    """One engine event on ``run`` (and on its root when ``also_root`` and that differs)."""
    values = {
        k: v if isinstance(v, MetadataValue) else _text(v)
        for k, v in metadata.items()
        if v not in (None, "")
    }
    data = dp.EngineEventData(metadata=values)
    message = mask_secrets(message)
    targets = [run.run_id]
    if also_root and run.root_run_id != run.run_id:
        targets.append(run.root_run_id)
    for run_id in targets:
        try:
            instance.report_engine_event(
                message, run_id=run_id, job_name=run.job_name, engine_event_data=data
            )
        except Exception:  # the decision stands; only its display failed
            _log.exception("could not write orbit's decision to the event log of %s", run_id)


def _text(value: object) -> MetadataValue:
    if isinstance(value, bool):
        return MetadataValue.bool(value)
    if isinstance(value, int):
        return MetadataValue.int(value)
    return MetadataValue.text(mask_secrets(str(value)))


def _announce_hold(
    instance: DagsterInstance,
    target: _Target,
    reason: str,
    detail: str,
    why: str,
    decided_by: str,
) -> None:
    """The held event on the run (and its root) and its ``orbit/decision`` tag."""
    todo = what_to_do(why, target.run_id)
    _event(
        instance,
        target,
        f"{PREFIX}: run {target.run_id} was {_cause(reason, detail)}. "
        f"{_upper(who(decided_by))} holds it: {why}. What to do: {todo}.",
        {
            "reason": reason,
            "detail": detail,
            "action": "held",
            "why": why,
            "what_to_do": todo,
            "decided_by": decided_by,
        },
        also_root=True,
    )
    _tag(instance, target.run_id, f"held ({reason}): {why}")
