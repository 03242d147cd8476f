"""Mapped steps that never started: the from-failure step list Dagster computes misses them.

``KnownExecutionState.build_resume_retry_reexecution`` (what the UI's "re-execute from
failure" and ``run_retries`` use) retries the mapped instances of a dynamic step that
failed or were interrupted, but once one instance of ``ship_shard[?]`` has run, the
unresolved step counts as seen and the instances that never started (the run worker died
while they waited for a slot) are not retried. The fan-in downstream then collects only the
outputs that exist and the run group ends SUCCESS with those shards' rows never processed.
Found by the chaos runner (``orbit_pipelines_tests/chaos/test_unstarted_shards.py``); the
same silent loss is reported upstream as dagster-io/dagster#20925 (open; see also #30077).

This module adds them back: every resolved instance of every mapped step whose mapping key
the run group has seen, that has not succeeded (or been skipped) in any run of the group,
and everything downstream of those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from dagster import DagsterEventType, DagsterInstance, DagsterRun

from orbit_pipelines.recovery import dagster_private as dp

UNRESOLVED_SUFFIX = "[?]"


def finished_in_group(instance: DagsterInstance, parent: DagsterRun) -> set[str]:
    """Step keys that succeeded or were skipped in the parent or any of its ancestors."""
    finished: set[str] = set()
    run: DagsterRun | None = parent
    while run is not None:
        records = instance.all_logs(
            run.run_id, of_type={DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_SKIPPED}
        )
        finished.update(r.step_key for r in records if r.step_key)
        run = instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    return finished


def mapping_keys_of(
    step_key: str,
    deps: Mapping[str, set[str]],
    dynamic_mappings: Mapping[str, Mapping[str, Sequence[str] | None]],
) -> set[str]:
    """The mapping keys an unresolved step ``x[?]`` fans out over: those its dynamic
    upstream produced, or, for a step mapped downstream of another mapped step, that one's."""
    keys: set[str] = set()
    for upstream in deps.get(step_key, ()):
        for produced in dynamic_mappings.get(upstream, {}).values():
            keys.update(produced or ())
        if upstream.endswith(UNRESOLVED_SUFFIX):
            keys.update(mapping_keys_of(upstream, deps, dynamic_mappings))
    return keys


def missing_mapped_steps(
    deps: Mapping[str, set[str]],
    dynamic_mappings: Mapping[str, Mapping[str, Sequence[str] | None]],
    finished: Iterable[str],
    selected: Iterable[str],
) -> list[str]:
    """Resolved mapped steps the step list ``selected`` misses, plus their downstream.

    ``deps`` is the parent plan's step → upstream step keys (unresolved keys for mapped
    steps); ``finished`` the step keys that succeeded anywhere in the run group.
    """
    done = set(finished)
    chosen = set(selected)
    missing: set[str] = set()
    for step_key in deps:
        if not step_key.endswith(UNRESOLVED_SUFFIX):
            continue
        base = step_key[: -len(UNRESOLVED_SUFFIX)]
        for mapping_key in mapping_keys_of(step_key, deps, dynamic_mappings):
            resolved = f"{base}[{mapping_key}]"
            if resolved not in done and resolved not in chosen:
                missing.add(resolved)
    if not missing:
        return []
    # Downstream of a missing instance: a fan-in (depends on ``x[?]``) or an instance of a
    # later mapped step with the same mapping key.
    frontier = set(missing)
    while frontier:
        unresolved = {_unresolved(k) for k in frontier}
        frontier = set()
        for step_key, upstream in deps.items():
            if not upstream & unresolved:
                continue
            if step_key.endswith(UNRESOLVED_SUFFIX):
                base = step_key[: -len(UNRESOLVED_SUFFIX)]
                keys = {
                    _mapping_key(k)
                    for k in missing
                    if k.endswith("]") and _unresolved(k) in upstream
                }
                candidates = {f"{base}[{key}]" for key in keys}
            else:
                candidates = {step_key}
            new = candidates - missing - chosen
            missing |= new
            frontier |= new
    return sorted(missing)


def _unresolved(step_key: str) -> str:
    """``x[shard_0]`` → ``x[?]``; a step that is not mapped is its own key."""
    if not step_key.endswith("]"):
        return step_key
    return step_key[: step_key.rindex("[")] + UNRESOLVED_SUFFIX


def _mapping_key(resolved_key: str) -> str:
    return resolved_key[resolved_key.rindex("[") + 1 : -1]


def complete_step_list(
    instance: DagsterInstance, parent: DagsterRun, step_keys: Sequence[str]
) -> list[str]:
    """Dagster's from-failure ``step_keys`` plus the mapped steps it misses."""
    snapshot_id = parent.execution_plan_snapshot_id
    snapshot = instance.get_execution_plan_snapshot(snapshot_id) if snapshot_id else None
    if snapshot is None:
        return list(step_keys)
    deps = dp.RemoteExecutionPlan(execution_plan_snapshot=snapshot).execution_deps()
    full_state = dp.KnownExecutionState.build_for_reexecution(instance, parent)
    extra = missing_mapped_steps(
        deps, full_state.dynamic_mappings, finished_in_group(instance, parent), step_keys
    )
    return [*step_keys, *extra]
