"""The README's "Make your own step crash-safe" blocks run, as written, against a real Postgres.

The python blocks of that section are written, in order, to one module file and imported
(Dagster reads annotations and source, so they are not ``exec``'d in a dict); then the op job
and one partition of the assets run through the ``defs`` the README builds.
"""

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from dagster import DagsterEventType, DagsterInstance, materialize

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Make your own step crash-safe"


def readme_blocks() -> list[str]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def load_readme_module(tmp_path: Path) -> ModuleType:
    path = tmp_path / "readme_example.py"
    path.write_text("\n\n".join(readme_blocks()))
    spec = importlib.util.spec_from_file_location("readme_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_example"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def readme(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("ORBIT_POSTGRES_URL", db_url)
    module = load_readme_module(tmp_path)
    yield module
    sys.modules.pop("readme_example", None)


def test_the_section_has_an_op_an_asset_and_the_wiring() -> None:
    blocks = readme_blocks()
    assert len(blocks) == 3
    assert "@op" in blocks[0] and "run_rows(" in blocks[0]
    assert "DailyPartitionsDefinition" in blocks[1] and "run_frames(" in blocks[1]
    assert "Definitions(" in blocks[2] and "make_recovery_sensor()" in blocks[2]
    for block in blocks:
        imported = re.findall(r"^from (\S+) import", block, flags=re.M)
        assert set(imported) <= {"dagster", "orbit_pipelines", "pandas"}, imported


def test_readme_op_job_runs(readme: ModuleType, dagster_home: Path) -> None:
    job = readme.defs.get_job_def("billing")
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance)
        assert result.success
        # amounts 10*i - 20: i = 0, 1 are negative (quarantined with E-1101), i = 2 is 0.
        assert result.output_for_node("charge_orders") == {
            "revenue": sum(10 * i - 20 for i in range(2, 50))
        }
        assert sorted(readme.RECEIPTS) == sorted(f"O-{i}" for i in range(2, 50))
        (output,) = [
            e
            for e in instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_OUTPUT)
            if e.step_key == "charge_orders"
        ]
        assert output.dagster_event is not None
        metadata = output.dagster_event.step_output_data.metadata
        assert metadata["rows_quarantined"].value == 2
        assert metadata["rows_done"].value == 48

        # Re-executing the whole run group does not charge anyone again.
        again = job.execute_in_process(instance=instance, tags={"orbit/root_run": result.run_id})
        assert again.success
        assert len(readme.RECEIPTS) == 48


def test_readme_daily_partitioned_assets_materialize_one_partition(
    readme: ModuleType, dagster_home: Path
) -> None:
    store = readme.store
    with DagsterInstance.get() as instance:
        result = materialize(
            [readme.events, readme.revenue_by_country],
            partition_key="2026-11-03",
            instance=instance,
            resources={
                "orbit_store": store,
                "io_manager": readme.PostgresCheckpointIOManager(store=store),
            },
        )
    assert result.success
    expected: dict[str, float] = {}
    for i in range(1, 30):  # event 0 is zero cents: quarantined (E-1101)
        country = ["de", "fr", "it"][i % 3]
        expected[country] = expected.get(country, 0) + i
    assert result.output_for_node("revenue_by_country") == pytest.approx(expected)
