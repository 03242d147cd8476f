"""The batched reads behind ``orbit check-interrupted`` at scale agree with the one-run and
one-group reads they replace, and the command's SQL does not grow with the number of groups.

Real failed Dagster runs (``execute_job`` on the test's Postgres instance) and real ledger
rows; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, execute_job, reconstructable
from sqlalchemy import Engine, event, text

from orbit_pipelines.cli import main
from orbit_pipelines.recovery.detect import (
    failure_cause,
    failure_causes,
    last_events,
    run_events,
    step_states_for_runs,
)
from orbit_pipelines.store.effect_ledger import effects_in_doubt, record_effect
from orbit_pipelines.store.group_progress import (
    effects_by_status,
    groups_progress,
    last_done_row_in_order,
    last_done_rows_in_order,
    row_counts_by_step,
)
from orbit_pipelines.store.heartbeats import heartbeats_for_group
from orbit_pipelines.store.recoveries import group_control, recoveries_for_group
from orbit_pipelines_tests.cli.jobs import bad_input_job, fine_job, timeout_job


def _run(job: object) -> str:
    with DagsterInstance.get() as instance:
        result = execute_job(reconstructable(job), instance=instance)  # type: ignore[arg-type]
        return result.run_id


@contextlib.contextmanager
def _counting() -> Iterator[list[int]]:
    seen = [0]

    def count(*_args: object) -> None:
        seen[0] += 1

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", count)


def _check_interrupted_statements() -> tuple[int, int]:
    """(groups listed, SQL statements) of one `orbit check-interrupted --json`."""
    out = io.StringIO()
    with _counting() as seen, contextlib.redirect_stdout(out):
        main(["check-interrupted", "--json"])
    return out.getvalue().count('"root_run_id"'), seen[0]


def _ledger_rows(engine: Engine, root: str) -> None:
    """A step with done rows in two batches (one with a succeeded effect), a heartbeat, an
    effect in doubt, a held recovery and a group control: every table the listing reads."""
    with engine.begin() as conn:
        hashes = {n: uuid.uuid4() for n in range(3)}
        for n, at in ((0, "2026-01-01"), (1, "2026-01-02"), (2, "2026-01-02")):
            conn.execute(
                text(
                    "INSERT INTO orbit.step_rows (root_run_id, step_key, key_hash, row_key,"
                    " status, attempt, result, updated_at) VALUES (:root, 'reject_input',"
                    " :hash, :key, 'done', 1, NULL, :at)"
                ),
                {"root": root, "hash": hashes[n], "key": f"r{n}", "at": at},
            )
        for n, status, result in ((1, "succeeded", "T-1"), (2, "in_doubt", None)):
            record_effect(
                conn,
                effect_key=f"ship-{root}-{n}",
                root_run_id=root,
                step_key="reject_input",
                row_key=f"r{n}",
                row_hash=hashes[n].bytes,
                receiver="unsafe",
                status=status,
                result=result,
            )
        conn.execute(
            text(
                "INSERT INTO orbit.heartbeats (run_id, step_key, root_run_id, host, pid,"
                " rows_done, rows_total) VALUES (:root, 'reject_input', :root, 'elsewhere',"
                " 1, 3, 10)"
            ),
            {"root": root},
        )
        conn.execute(
            text(
                "INSERT INTO orbit.recoveries (parent_run_id, root_run_id, job_name, attempt,"
                " reason, detail, decided_by, status) VALUES (:root, :root, 'bad_input_job',"
                " 1, 'failed', 'step failed | held: E-1003 needs a person', 'test', 'held')"
            ),
            {"root": root},
        )
        conn.execute(
            text(
                "INSERT INTO orbit.run_groups (root_run_id, auto_recover, note)"
                " VALUES (:root, false, 'looked at')"
            ),
            {"root": root},
        )


@pytest.mark.usefixtures("dagster_home")
def test_batched_dagster_reads_equal_the_per_run_reads() -> None:
    run_ids = [_run(bad_input_job), _run(timeout_job), _run(fine_job)]
    with DagsterInstance.get() as instance:
        stats = step_states_for_runs(instance, run_ids)
        newest = last_events(instance, run_ids)
        records = list(instance.get_run_records())
        causes = failure_causes(instance, records)
        for run_id in run_ids:
            theirs = {
                s.step_key: (s.status.value, s.start_time)
                for s in instance.get_run_step_stats(run_id)
                if s.status is not None
            }
            mine = {s.step_key: (s.status, s.start_time) for s in stats[run_id]}
            assert mine.keys() == theirs.keys()
            for key, (status, start) in mine.items():
                # Read from the event's stored time column (microseconds), not its body.
                assert status == theirs[key][0]
                assert start == pytest.approx(theirs[key][1], abs=1e-5)
            (own,) = instance.get_records_for_run(run_id, limit=1, ascending=False).records
            assert newest[run_id] == own.event_log_entry
            assert causes[run_id] == failure_cause(instance, run_id)
        assert causes[run_ids[0]][2] == "E-1003" and causes[run_ids[1]][2] == "E-3001"
        everything = run_events(instance, run_ids[:1], set(_all_types(instance, run_ids[0])))
        # Plain log lines carry no event type; run_events reads typed events only.
        typed = [e for e in instance.all_logs(run_ids[0]) if e.dagster_event is not None]
        assert everything[run_ids[0]] == typed


def _all_types(instance: DagsterInstance, run_id: str) -> list[object]:
    return [e.dagster_event.event_type for e in instance.all_logs(run_id) if e.dagster_event]


def test_groups_progress_equals_the_per_group_reads(engine: Engine) -> None:
    roots = [f"root-{n}-{uuid.uuid4().hex[:6]}" for n in range(3)]
    for root in roots[:2]:
        _ledger_rows(engine, root)
    with engine.connect() as conn:
        progress = groups_progress(conn, roots)
        last = last_done_rows_in_order(
            conn, [(root, "reject_input") for root in roots] + [(roots[0], "no_such_step")]
        )
        for root in roots:
            assert progress.beats.get(root, []) == heartbeats_for_group(conn, root)
            assert progress.row_counts.get(root, {}) == row_counts_by_step(conn, root)
            assert progress.recoveries.get(root, []) == recoveries_for_group(conn, root)
            assert progress.controls.get(root) == group_control(conn, root)
            assert progress.in_doubt.get(root, []) == effects_in_doubt(conn, root)
            assert progress.effect_counts.get(root, {}) == effects_by_status(conn, root)
            assert last.get((root, "reject_input")) == last_done_row_in_order(
                conn, root, "reject_input"
            )
        assert (roots[0], "no_such_step") not in last
    # The last batch (2026-01-02) holds r1 and r2; r1's effect is the one recorded.
    assert last[(roots[0], "reject_input")].row_key == "r1"
    assert last[(roots[0], "reject_input")].result == "T-1"


def test_check_interrupted_sql_does_not_grow_with_the_groups(
    dagster_home: Path, engine: Engine
) -> None:
    """Before the batching every listed group cost about 12 statements (step stats, policy,
    heartbeats, rows, effects, recoveries, controls, last row); now the count is the same
    for 2 groups and for 6, of both kinds (candidates and held recoveries)."""
    first = [_run(bad_input_job), _run(timeout_job)]
    _ledger_rows(engine, _run(bad_input_job))
    small = _check_interrupted_statements()
    more = [_run(bad_input_job), _run(timeout_job)]
    _ledger_rows(engine, _run(bad_input_job))
    _ledger_rows(engine, _run(bad_input_job))
    large = _check_interrupted_statements()
    assert (small[0], large[0]) == (len(first) + 1, len(first) + len(more) + 3)
    assert large[1] == small[1], (small, large)
