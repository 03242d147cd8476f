"""What a person needs to know about a run group: where it stopped, what is left, what is
in doubt, and what recovery will do next.

Shared by ``orbit check-interrupted`` and ``orbit status``. It only reads: detection and the
policy decision come from ``detect`` and ``policy``, so the CLI shows exactly what the sensor
would do, never a second opinion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunNotFoundError,
    DagsterRunStatus,
    RunRecord,
    RunsFilter,
)
from sqlalchemy import Engine

from orbit_pipelines.errors import E1010_UNKNOWN_RUN, OrbitError
from orbit_pipelines.recovery.detect import (
    Candidate,
    StepState,
    detect,
    detect_failed_before_lookback,
    failure_cause,
    failure_causes,
    run_events,
    step_states_for_runs,
)
from orbit_pipelines.recovery.explain import Explained, explain, first_line
from orbit_pipelines.recovery.launch import ROOT_RUN_ID_TAG
from orbit_pipelines.recovery.policy import Decision, decide_many
from orbit_pipelines.recovery.settings import RecoverySettings
from orbit_pipelines.store.effect_ledger import OpenEffect
from orbit_pipelines.store.group_progress import (
    DoneRow,
    GroupsProgress,
    groups_progress,
    held_parent_run_ids,
    last_done_rows_in_order,
)
from orbit_pipelines.store.heartbeats import Heartbeat
from orbit_pipelines.store.recoveries import Recovery
from orbit_pipelines.store.urls import mask_secrets
from orbit_pipelines.tags import root_run_id_of

_INTERRUPTED = ("dead", "hung", "failed", "held")
_ENDED_BADLY = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


@dataclass(frozen=True)
class StepView:
    """One step of the group: its latest Dagster status and its rows in the ledger."""

    step_key: str
    status: str  # SUCCESS, FAILURE, IN_PROGRESS, SKIPPED or NOT_STARTED
    rows: dict[str, int]
    rows_total: int | None
    beat: Heartbeat | None

    @property
    def rows_done(self) -> int:
        """Rows finished for good (done or quarantined) in the ledger; for a step that keeps
        no ledger, what its heartbeat last reported."""
        ledger = self.rows.get("done", 0) + self.rows.get("quarantined", 0)
        if not self.rows and self.beat is not None:
            return self.beat.rows_done
        return ledger


@dataclass(frozen=True)
class GroupOverview:
    """A run group as a person sees it."""

    root_run_id: str
    job_name: str
    latest_run_id: str
    latest_status: str
    state: str  # dead | hung | failed | held | recovering | running | succeeded | abandoned
    started_at: datetime | None
    last_activity: datetime | None
    steps: list[StepView]
    error_code: str | None
    error_message: str | None
    last_done: DoneRow | None
    in_doubt: list[OpenEffect]
    effects: dict[str, int]
    recoveries: list[Recovery]
    plan: str
    decision: Decision | None = field(default=None)
    failed_step: str | None = None
    explained: Explained | None = None
    group_started_at: datetime | None = None
    # Its latest run failed before the sensor's lookback (``failed_lookback_s``): the
    # sensor will never decide on it, only a person can.
    before_lookback: bool = False

    @property
    def focus(self) -> StepView | None:
        """The step the group stopped in: the one that failed (or was running when it died),
        else the first that has not succeeded."""
        key = self.failed_step or self.next_step
        return next((s for s in self.steps if s.step_key == key), None)

    @property
    def remaining_rows(self) -> int | None:
        """Rows of the focus step still to do, when its total is known."""
        focus = self.focus
        if focus is None or focus.rows_total is None:
            return None
        return max(0, focus.rows_total - focus.rows_done)

    @property
    def effects_that_would_repeat(self) -> int:
        """Side effects that already happened: a restart from scratch does them again."""
        return self.effects.get("succeeded", 0)

    @property
    def rows_done(self) -> int:
        """Rows finished across every step."""
        return sum(step.rows_done for step in self.steps)

    @property
    def rows_total(self) -> int | None:
        """Rows known to exist across the steps that reported a total."""
        totals = [step.rows_total for step in self.steps if step.rows_total is not None]
        return sum(totals) if totals else None

    @property
    def steps_done(self) -> int:
        """Steps that succeeded (in any run of the group)."""
        return sum(1 for step in self.steps if step.status == "SUCCESS")

    @property
    def steps_failed(self) -> int:
        """Steps whose latest attempt failed."""
        return sum(1 for step in self.steps if step.status == "FAILURE")

    @property
    def next_step(self) -> str | None:
        """The first step that has not succeeded: where a resume starts."""
        return next(
            (s.step_key for s in self.steps if s.status not in ("SUCCESS", "SKIPPED")), None
        )

    @property
    def needs_person(self) -> bool:
        """Held decisions, in-doubt effects and failures before the sensor's lookback wait
        for a person."""
        held_now = self.decision is not None and self.decision.action == "hold"
        return self.state == "held" or held_now or bool(self.in_doubt) or self.before_lookback


def _group_runs(instance: DagsterInstance, run_id: str) -> tuple[str, list[DagsterRun]]:
    try:
        group = instance.get_run_group(run_id)
    except DagsterRunNotFoundError:
        group = None
    if group is None:
        raise OrbitError(
            E1010_UNKNOWN_RUN,
            f"no run with id {run_id}",
            hint="`orbit check-interrupted` lists the runs that need attention",
        )
    root, runs = group[0], list(group[1])
    return root, runs


def _records(instance: DagsterInstance, runs: list[DagsterRun]) -> dict[str, RunRecord]:
    """Every run record of the group in one read."""
    found = instance.get_run_records(filters=RunsFilter(run_ids=[r.run_id for r in runs]))
    return {record.dagster_run.run_id: record for record in found}


def _ordered(runs: list[DagsterRun], records: dict[str, RunRecord]) -> list[DagsterRun]:
    def created(run: DagsterRun) -> datetime:
        record = records.get(run.run_id)
        return record.create_timestamp if record else datetime.min.replace(tzinfo=UTC)

    return sorted(runs, key=created)


class DagsterReads:
    """Dagster reads shared by the groups of one listing: an execution plan snapshot is the
    same for every run of a job version, and each run's step stats are read once, not per
    question asked of them."""

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance
        self._snapshots: dict[str, Any] = {}
        self._stats: dict[str, list[StepState]] = {}
        self._root_of: dict[str, str] = {}
        self._members: dict[str, list[RunRecord]] = {}
        self._causes: dict[str, tuple[str, str, str | None]] = {}

    def prefetch_groups(
        self, run_ids: list[str], known: dict[str, RunRecord] | None = None
    ) -> None:
        """Read the run groups of ``run_ids`` in three queries, whatever their number
        (``known``: records read already, by detection)."""
        if not run_ids:
            return
        known = known or {}
        asked = [known[i] for i in dict.fromkeys(run_ids) if i in known]
        unknown = [i for i in dict.fromkeys(run_ids) if i not in known]
        if unknown:
            asked += self.instance.get_run_records(filters=RunsFilter(run_ids=unknown))
        for record in asked:
            run = record.dagster_run
            self._root_of[run.run_id] = root_run_id_of(run)
        roots = sorted(set(self._root_of.values()))
        root_set = set(roots)
        # A root asked for is read already (most listed runs are their group's root).
        members = [r for r in asked if r.dagster_run.run_id in root_set]
        unread = sorted(root_set - {r.dagster_run.run_id for r in members})
        if unread:
            members += self.instance.get_run_records(filters=RunsFilter(run_ids=unread))
        members += self.instance.get_run_records(filters=RunsFilter(tags={ROOT_RUN_ID_TAG: roots}))
        for record in members:
            run = record.dagster_run
            group = self._members.setdefault(root_run_id_of(run), [])
            if all(r.dagster_run.run_id != run.run_id for r in group):
                group.append(record)
        # The failure cause of every group's latest failed run: one read of the step
        # failures of the span, not one event-log read per group.
        latest = [max(g, key=lambda r: r.create_timestamp) for g in self._members.values()]
        self.prefetch_causes([r for r in latest if r.dagster_run.status in _ENDED_BADLY])

    def add_group(self, root: str, records: list[RunRecord]) -> None:
        """A group read by the caller (one run's ``get_run_group``)."""
        self._members[root] = records
        for record in records:
            self._root_of[record.dagster_run.run_id] = root

    def alias(self, run_id: str, root: str) -> None:
        """``run_id`` belongs to the group of ``root``."""
        self._root_of[run_id] = root

    def known_causes(self, candidates: list[Candidate]) -> None:
        """Failed candidates carry their run's cause (detection read it): not read again."""
        for c in candidates:
            if c.status == DagsterRunStatus.FAILURE.value:
                self._causes.setdefault(c.run_id, (c.reason, c.detail, c.error_code))

    def prefetch_causes(self, records: list[RunRecord]) -> None:
        """Failure causes of these failed runs not read yet, in one read."""
        missing = [r for r in records if r.dagster_run.run_id not in self._causes]
        self._causes.update(failure_causes(self.instance, missing))

    def prefetch_step_stats(self, run_ids: list[str]) -> None:
        """Step stats of these runs not read yet, in one event read for all of them."""
        missing = [run_id for run_id in dict.fromkeys(run_ids) if run_id not in self._stats]
        if missing:
            self._stats.update(step_states_for_runs(self.instance, missing))

    def cause(self, run_id: str) -> tuple[str, str, str | None]:
        """(reason, detail, code) of a failed run: prefetched, else read now."""
        if run_id not in self._causes:
            self._causes[run_id] = failure_cause(self.instance, run_id)
        return self._causes[run_id]

    def group(self, run_id: str) -> tuple[str, list[RunRecord]] | None:
        """(root, member records) when prefetched."""
        root = self._root_of.get(run_id)
        if root is None or root not in self._members:
            return None
        return root, self._members[root]

    def snapshot(self, snapshot_id: str) -> Any:
        """The execution plan snapshot (cached by id)."""
        if snapshot_id not in self._snapshots:
            self._snapshots[snapshot_id] = self.instance.get_execution_plan_snapshot(snapshot_id)
        return self._snapshots[snapshot_id]

    def step_stats(self, run_id: str) -> list[StepState]:
        """The run's step states (cached by run)."""
        if run_id not in self._stats:
            self.prefetch_step_stats([run_id])
        return self._stats[run_id]


def _failed_steps(reads: DagsterReads, run: DagsterRun) -> tuple[list[str], list[str]]:
    """(failed, still in progress) step keys of one run, in start order."""
    stats = sorted(reads.step_stats(run.run_id), key=lambda s: s.start_time or 0.0)
    failed = [s.step_key for s in stats if s.status == "FAILURE"]
    running = [s.step_key for s in stats if s.status is None and s.start_time is not None]
    return failed, running


def _step_statuses(reads: DagsterReads, runs: list[DagsterRun]) -> dict[str, str]:
    """Latest status per step across the group (later runs override earlier ones)."""
    statuses: dict[str, str] = {}
    for run in runs:
        if run.execution_plan_snapshot_id:
            snap = reads.snapshot(run.execution_plan_snapshot_id)
            for step in snap.steps:
                if "[?]" not in step.key:  # unresolved dynamic steps have no rows of their own
                    statuses.setdefault(step.key, "NOT_STARTED")
        for stat in reads.step_stats(run.run_id):
            if stat.status is not None:
                statuses[stat.step_key] = stat.status
            elif stat.start_time is not None:
                statuses[stat.step_key] = "IN_PROGRESS"
    return statuses


def _timestamp(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


def _state(latest: DagsterRun, recoveries: list[Recovery], abandoned: bool) -> str:
    if abandoned:
        return "abandoned"
    mine = next((r for r in recoveries if r.parent_run_id == latest.run_id), None)
    if mine is not None and mine.status == "held":
        return "held"
    if mine is not None and mine.status in ("launching", "launched"):
        return "recovering"
    if latest.status == DagsterRunStatus.SUCCESS:
        return "succeeded"
    if latest.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
        return "failed"
    return "running"


def _plan(
    decision: Decision | None,
    state: str,
    recoveries: list[Recovery],
    settings: RecoverySettings,
    latest_run_id: str = "",
    before_lookback: bool = False,
) -> str:
    if decision is not None:
        if decision.action == "launch":
            return (
                f"the recovery sensor re-executes it from failure on its next tick "
                f"(within {settings.interval_s}s; attempt {decision.attempt} of {settings.max_attempts})"
            )
        if decision.action == "wait":
            when = f"{decision.not_before:%H:%M:%S} UTC" if decision.not_before else "later"
            return f"the recovery sensor retries at {when} ({decision.why})"
        if decision.action == "hold":
            return f"held for a person: {decision.why}"
        return f"nothing automatic: {decision.why}"
    if state == "held":
        held = next((r for r in recoveries if r.status == "held"), None)
        why = first_line(mask_secrets(held.detail.split("| held: ", 1)[-1])) if held else "policy"
        return f"held for a person: {why}"
    if state == "recovering":
        latest = recoveries[-1] if recoveries else None
        target = f" as run {latest.recovery_run_id}" if latest and latest.recovery_run_id else ""
        return f"being recovered{target}"
    if state == "abandoned":
        return "abandoned by a person (orbit cancel); recovery leaves it alone"
    hours = settings.failed_lookback_s / 3600
    if state == "failed" and before_lookback:
        # The daemon was down (a weekend) or the failure was left alone for a day: the
        # sensor only pages through the lookback, so nothing automatic will ever happen.
        return (
            f"before the lookback: the sensor will not recover it (it failed more than "
            f"{hours:g} h ago, ORBIT_RECOVERY_FAILED_LOOKBACK_S); a person decides: "
            f"orbit resume {latest_run_id} (or orbit restart / orbit cancel)"
        )
    if state == "failed":
        # Failed, and the sensor has nothing to decide: it was cancelled outside orbit, or
        # failed within the lookback without the sensor having seen it yet. Its rows are
        # not done; "nothing to do" would let a person walk away from them.
        return (
            "not recovered automatically: the recovery sensor only retries runs that failed "
            f"within its lookback ({hours:g} h) and were not cancelled; a person decides: "
            f"orbit resume {latest_run_id} (or orbit restart / orbit cancel)"
        )
    return "nothing to do"


def _crash_texts(instance: DagsterInstance, run_ids: list[str]) -> dict[str, str]:
    """What Dagster said about a crashed process of each run (the signal is only there),
    in one read of the runs' engine events."""
    if not run_ids:
        return {}
    events = run_events(instance, run_ids, (DagsterEventType.ENGINE_EVENT,))
    texts: dict[str, str] = {}
    for run_id, entries in events.items():
        found = []
        for entry in entries:
            message = (entry.dagster_event.message if entry.dagster_event else None) or ""
            if "terminated by signal" in message or "exited with code" in message:
                found.append(message)
        texts[run_id] = "\n".join(found)
    return texts


def _pick_failed_step(
    detail: str | None, failed: list[str], running: list[str], known: set[str]
) -> str | None:
    """The step the group stopped in.

    The step named by the failure event first (Dagster's own ``step X failed``), then the
    latest run's failed steps, then a step that was running when the run died. Unstarted
    static steps downstream (a report after mapped shards) come before mapped steps in the
    plan, so "the first step that has not succeeded" names the wrong one.
    """
    if detail and detail.startswith("step "):
        key = detail[5:].split(" failed", 1)[0]
        if key in known:
            return key
    for key in failed + running:
        if key in known:
            return key
    return None


def group_overview(
    instance: DagsterInstance,
    engine: Engine,
    run_id: str,
    settings: RecoverySettings,
    *,
    candidate: Candidate | None = None,
    reads: DagsterReads | None = None,
) -> GroupOverview:
    """Everything about the group that ``run_id`` (any run of it) belongs to.

    ``reads`` shares Dagster reads across the groups of one listing.
    """
    reads = reads or DagsterReads(instance)
    if reads.group(run_id) is None:
        root, runs = _group_runs(instance, run_id)  # E-1010 for an unknown run
        reads.add_group(root, list(_records(instance, runs).values()))
        reads.alias(run_id, root)
    found = group_overviews(instance, engine, [(run_id, candidate)], settings, reads=reads)
    return found[0]


@dataclass
class _Pending:
    """One group's Dagster side, read before the ledger's (which needs its root)."""

    run_id: str
    candidate: Candidate | None
    root: str
    runs: list[DagsterRun]
    records: dict[str, RunRecord]


def group_overviews(
    instance: DagsterInstance,
    engine: Engine,
    wanted: list[tuple[str, Candidate | None]],
    settings: RecoverySettings,
    *,
    reads: DagsterReads,
) -> list[GroupOverview]:
    """``group_overview`` of many (run id, candidate) pairs with every read batched: the
    groups were prefetched into ``reads``; here one step-stats read for all their runs, one
    failure-cause read, the ledger's seven queries, the policy's four, one for the last
    completed rows and one for crash texts, whatever the number of groups. A run id not
    prefetched (deleted from Dagster's storage) is left out."""
    pending: list[_Pending] = []
    for run_id, candidate in wanted:
        known = reads.group(run_id)
        if known is None:
            continue
        root, found = known
        records = {r.dagster_run.run_id: r for r in found}
        runs = _ordered([r.dagster_run for r in found], records)
        pending.append(_Pending(run_id, candidate, root, runs, records))
    if not pending:
        return []
    reads.prefetch_step_stats([run.run_id for p in pending for run in p.runs])
    reads.prefetch_causes(
        [p.records[p.runs[-1].run_id] for p in pending if p.runs[-1].status in _ENDED_BADLY]
    )
    candidates = [p.candidate for p in pending if p.candidate is not None]
    with engine.connect() as conn:
        progress = groups_progress(conn, [p.root for p in pending])
        decisions = dict(
            zip(
                (id(c) for c in candidates),
                decide_many(conn, candidates, settings) if candidates else [],
                strict=True,
            )
        )
        drafts = [_draft(reads, p, progress, decisions.get(id(p.candidate))) for p in pending]
        last_done = last_done_rows_in_order(
            conn, [(d.root, d.focus_key) for d in drafts if d.focus_key]
        )
    crashed = [d.latest.run_id for d in drafts if d.needs_crash_text]
    crash_texts = _crash_texts(instance, crashed)
    return [
        _finish(d, progress, last_done, crash_texts.get(d.latest.run_id, ""), settings)
        for d in drafts
    ]


@dataclass
class _Draft:
    """A group's overview before the reads that depend on its focus step."""

    root: str
    runs: list[DagsterRun]
    records: dict[str, RunRecord]
    latest: DagsterRun
    beats: dict[str, Heartbeat]
    steps: list[StepView]
    state: str
    decision: Decision | None
    error_code: str | None
    error_message: str | None
    failed_step: str | None
    focus_key: str | None

    @property
    def needs_crash_text(self) -> bool:
        return bool(self.error_message and "ChildProcessCrashException" in self.error_message)


def _draft(
    reads: DagsterReads, p: _Pending, progress: GroupsProgress, decision: Decision | None
) -> _Draft:
    latest = p.runs[-1]
    candidate = p.candidate
    statuses = _step_statuses(reads, p.runs)
    failed, running = _failed_steps(reads, latest)
    beats: dict[str, Heartbeat] = {}
    for beat in progress.beats.get(p.root, []):
        if beat.step_key not in beats or beat.beat_at > beats[beat.step_key].beat_at:
            beats[beat.step_key] = beat
    for step_key in beats:
        statuses.setdefault(step_key, "IN_PROGRESS")
    counts = progress.row_counts.get(p.root, {})
    steps = [
        StepView(
            step_key=key,
            status=status,
            rows=counts.get(key, {}),
            rows_total=beats[key].rows_total if key in beats else None,
            beat=beats.get(key),
        )
        for key, status in statuses.items()
    ]
    recoveries = progress.recoveries.get(p.root, [])
    control = progress.controls.get(p.root)
    abandoned = bool(control and control.abandoned_at)
    # An abandoned group is a person's decision: it is not "interrupted" any more,
    # even while its last run still looks dead or failed to the detector.
    state = (
        candidate.reason
        if candidate is not None and not abandoned
        else _state(latest, recoveries, abandoned)
    )
    error_code: str | None = None
    error_message: str | None = None
    if latest.status in _ENDED_BADLY:
        _reason, error_message, error_code = reads.cause(latest.run_id)
    elif candidate is not None:
        error_message, error_code = candidate.detail, candidate.error_code
    known = {s.step_key for s in steps}
    failed_step = _pick_failed_step(error_message, failed, running, known)
    if failed_step is None and state in _INTERRUPTED:
        failed_step = next(
            (s.step_key for s in steps if s.status not in ("SUCCESS", "SKIPPED")), None
        )
    focus_key = failed_step or (steps[-1].step_key if steps else None)
    return _Draft(
        root=p.root,
        runs=p.runs,
        records=p.records,
        latest=latest,
        beats=beats,
        steps=steps,
        state=state,
        decision=decision,
        error_code=error_code,
        error_message=error_message,
        failed_step=failed_step,
        focus_key=focus_key,
    )


def _finish(
    d: _Draft,
    progress: GroupsProgress,
    last_done: dict[tuple[str, str], DoneRow],
    crash: str,
    settings: RecoverySettings,
) -> GroupOverview:
    explained: Explained | None = None
    if d.error_code or d.error_message:
        explained = explain(
            d.error_code,
            d.error_message,
            crash_text=crash if d.needs_crash_text else "",
            step_key=d.failed_step,
        )
    recoveries = progress.recoveries.get(d.root, [])
    root_record = d.records.get(d.runs[0].run_id)
    latest_record = d.records.get(d.latest.run_id)
    end_time = latest_record.end_time if latest_record is not None else None
    before_lookback = (
        d.decision is None
        and d.state == "failed"
        and d.latest.status == DagsterRunStatus.FAILURE
        and end_time is not None
        and end_time < time.time() - settings.failed_lookback_s
    )
    activity = [b.beat_at for b in d.beats.values()]
    if latest_record is not None and latest_record.update_timestamp is not None:
        activity.append(latest_record.update_timestamp.replace(tzinfo=UTC))
    return GroupOverview(
        root_run_id=d.root,
        job_name=d.latest.job_name,
        latest_run_id=d.latest.run_id,
        latest_status=d.latest.status.value,
        state=d.state,
        started_at=_timestamp(latest_record.start_time) if latest_record else None,
        last_activity=max(activity) if activity else None,
        steps=d.steps,
        error_code=explained.code if explained else d.error_code,
        error_message=d.error_message,
        last_done=last_done.get((d.root, d.focus_key)) if d.focus_key else None,
        in_doubt=progress.in_doubt.get(d.root, []),
        effects=progress.effect_counts.get(d.root, {}),
        recoveries=recoveries,
        plan=_plan(d.decision, d.state, recoveries, settings, d.latest.run_id, before_lookback),
        decision=d.decision,
        failed_step=d.failed_step,
        explained=explained,
        group_started_at=_timestamp(root_record.start_time) if root_record else None,
        before_lookback=before_lookback,
    )


@dataclass(frozen=True)
class InterruptedListing:
    """``orbit check-interrupted``'s groups, and how far back the scan of failures older
    than the sensor's lookback went (``older_complete`` False: it stopped at its bound,
    ``older_scanned`` RUN_FAILURE events, with older ones left unread)."""

    groups: list[GroupOverview]
    older_scanned: int
    older_complete: bool


def interrupted_groups(
    instance: DagsterInstance, engine: Engine, settings: RecoverySettings
) -> list[GroupOverview]:
    """Every run group that is dead, hung, failed (and not yet recovered) or held; see
    ``interrupted_listing``."""
    return interrupted_listing(instance, engine, settings).groups


def interrupted_listing(
    instance: DagsterInstance, engine: Engine, settings: RecoverySettings
) -> InterruptedListing:
    """Every run group that is dead, hung, failed (and not yet recovered) or held, then
    the groups whose latest run failed before the sensor's lookback (the sensor will never
    see them): not re-executed by anyone, not decided, not succeeded since, not abandoned
    or cancelled.

    A constant number of queries whatever the number of groups: detection pages through
    the failures (the older ones in a second, bounded scan), and every group is read in
    the batches of ``group_overviews``."""
    read: dict[str, RunRecord] = {}
    with engine.connect() as conn:
        candidates = detect(instance, conn, settings, records=read)
        held = held_parent_run_ids(conn)
        older = detect_failed_before_lookback(instance, conn, settings, records=read)
    reads = DagsterReads(instance)
    reads.known_causes(candidates + older.candidates)
    old_ids = [c.run_id for c in older.candidates]
    reads.prefetch_groups([c.run_id for c in candidates] + held + old_ids, known=read)
    listed = group_overviews(
        instance, engine, [(c.run_id, c) for c in candidates], settings, reads=reads
    )
    seen: set[str] = set()
    found: list[GroupOverview] = []
    for overview in listed:
        if overview.root_run_id not in seen and overview.state != "abandoned":
            seen.add(overview.root_run_id)
            found.append(overview)
    # Held runs of groups not listed already (as a candidate); a run deleted from Dagster's
    # storage was not prefetched and is left out.
    rest = [
        run_id for run_id in held if (known := reads.group(run_id)) is None or known[0] not in seen
    ]
    for overview in group_overviews(
        instance, engine, [(run_id, None) for run_id in rest], settings, reads=reads
    ):
        if overview.root_run_id not in seen and overview.state in _INTERRUPTED:
            seen.add(overview.root_run_id)
            found.append(overview)
    # No candidate for these: the policy would answer "launch", which the sensor will
    # not do. The group's own latest run decides: a later success, a cancel, an abandon
    # or a running re-execution of the group leaves it out.
    old_rest = [
        run_id
        for run_id in dict.fromkeys(old_ids)
        if (known := reads.group(run_id)) is not None and known[0] not in seen
    ]
    for overview in group_overviews(
        instance, engine, [(run_id, None) for run_id in old_rest], settings, reads=reads
    ):
        if overview.root_run_id not in seen and overview.before_lookback:
            seen.add(overview.root_run_id)
            found.append(overview)
    return InterruptedListing(found, older.scanned, older.complete)
