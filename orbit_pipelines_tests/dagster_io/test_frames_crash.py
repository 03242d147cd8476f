"""run_frames under a real SIGKILL: the step process dies mid-frame (a chunk written through
``fctx.conn``, not committed); a re-execution from failure resumes at that chunk, every row
is written once and the total equals a crash-free run's."""

from pathlib import Path

import pytest
from dagster import DagsterInstance, ReexecutionOptions, execute_job, reconstructable
from sqlalchemy import create_engine, text

from orbit_pipelines_tests.dagster_io.frame_jobs import BATCH, KILL_CHUNK, ROWS, bound_frame_job


def test_step_killed_mid_frame_resumes_with_each_row_written_once(
    db_url: str, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORBIT_POSTGRES_URL", db_url)
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE frame_writes (id int, run_id text)"))
    job = reconstructable(bound_frame_job)
    instance = DagsterInstance.get()
    with execute_job(job, instance) as first:
        assert not first.success
        first_id = first.run_id
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM frame_writes")).scalar_one()
    assert before == KILL_CHUNK * BATCH  # the killed chunk's writes never committed

    with execute_job(
        job, instance, reexecution_options=ReexecutionOptions.from_failure(first_id, instance)
    ) as second:
        assert second.success
        total = second.output_for_node("price_frame")
    assert total == pytest.approx(sum(range(ROWS)) * 0.5)
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT id FROM frame_writes ORDER BY id"))]
        runs = conn.execute(
            text("SELECT run_id, count(*) FROM frame_writes GROUP BY 1 ORDER BY 2")
        ).all()
    engine.dispose()
    assert ids == list(range(ROWS))
    # The recovery wrote only what the crash left: chunks KILL_CHUNK.. onwards.
    assert sorted(n for _, n in runs) == sorted([KILL_CHUNK * BATCH, ROWS - KILL_CHUNK * BATCH])
