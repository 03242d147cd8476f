"""The producing step's identity is recorded: fails loudly if a Dagster upgrade moves the API.

``dagster_io/step_identity.py`` reads the resolved run config through the step context
(not a documented API); if that moves, config hashes silently become None and the stale
config check stops working. These tests catch that.
"""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance, execute_job, reconstructable
from sqlalchemy import Engine, select, text

from orbit_pipelines.dagster_io.step_identity import SOURCE_PREFIX, config_hash, node_name
from orbit_pipelines.store.tables import step_outputs
from orbit_pipelines_tests.dagster_io import jobs


def test_stored_outputs_carry_code_version_and_config_hash(
    dagster_home: Path, engine: Engine
) -> None:
    with engine.begin() as conn:
        conn.execute(text(jobs.CALLS_DDL))
    config = {"ops": {"transform": {"config": {"fail_times": 0}}}}
    with execute_job(
        reconstructable(jobs.etl_job), DagsterInstance.get(), run_config=config
    ) as result:
        assert result.success
    with engine.connect() as conn:
        rows = {
            step: (version, hashed)
            for step, version, hashed in conn.execute(
                select(
                    step_outputs.c.step_key, step_outputs.c.code_version, step_outputs.c.config_hash
                )
            )
        }
    assert rows["extract"][0] == "1", "the op's code_version"
    assert rows["transform"][0] is not None and rows["transform"][0].startswith(SOURCE_PREFIX)
    assert rows["transform"][1] == config_hash({"fail_times": 0})
    assert rows["extract"][1] is not None, "resolved run config no longer reachable"


def test_node_name_drops_the_mapping_key() -> None:
    assert node_name("work_shard[b]") == "work_shard"
    assert node_name("graph.op") == "graph.op"
    assert node_name("graph.op[k[1]]") == "graph.op"
