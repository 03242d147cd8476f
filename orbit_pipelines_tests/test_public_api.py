"""The public API: what ``orbit_pipelines.__all__`` promises, that a job built from those names
alone runs, and that the product never imports the examples package.

No ``from __future__ import annotations``: Dagster inspects the op and asset signatures.
"""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    DagsterInstance,
    Definitions,
    OpExecutionContext,
    asset,
    job,
    materialize,
    multi_asset,
    op,
)

import orbit_pipelines
from orbit_pipelines import (
    Count,
    ExecutorOptions,
    FrameContext,
    OrbitError,
    OrbitStore,
    PostgresCheckpointIOManager,
    RowContext,
    Sum,
    make_recovery_sensor,
    register_error_code,
    run_frames,
    run_rows,
)

PRODUCT = Path(orbit_pipelines.__file__).parent
EXAMPLES = PRODUCT.parent / "orbit_examples"
# The one import of the examples the product may make: `orbit demo`, lazily, inside a
# function, behind a clear error when the examples are not installed.
ALLOWED_LAZY = {("cli/demo.py", "_examples_demo")}


def _import_module_arg(node: ast.AST) -> str | None:
    """The module named by ``importlib.import_module("...")`` (or ``import_module``) in
    ``node``, when it is such a call with a literal name."""
    if (
        isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
    ):
        return node.args[0].value
    return None


def _examples_imports(tree: ast.AST) -> list[tuple[int, str | None]]:
    """(line, enclosing function or None) of every import of orbit_examples in ``tree``."""
    found: list[tuple[int, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = child.name
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                names = [child.module or ""]
            elif (module := _import_module_arg(child)) is not None:
                names = [module]
            if any(n == "orbit_examples" or n.startswith("orbit_examples.") for n in names):
                found.append((child.lineno, function))
            visit(child, inner)

    visit(tree, None)
    return found


def test_the_product_never_imports_the_examples() -> None:
    files = sorted(PRODUCT.rglob("*.py"))
    assert len(files) > 50  # the walk really covers the package
    offending = []
    for path in files:
        relative = path.relative_to(PRODUCT).as_posix()
        for line, function in _examples_imports(ast.parse(path.read_text(), str(path))):
            if (relative, function) not in ALLOWED_LAZY:
                offending.append(f"{relative}:{line} (in {function or 'module scope'})")
    assert offending == [], "orbit_pipelines imports orbit_examples: " + ", ".join(offending)


def test_the_ast_walk_finds_an_import_of_the_examples() -> None:
    # The check above can fail: each spelling of the import is found.
    source = (
        "import orbit_examples\n"
        "from orbit_examples.pipelines import shipments\n"
        "def f():\n    import importlib\n    importlib.import_module('orbit_examples.demo')\n"
    )
    assert _examples_imports(ast.parse(source)) == [(1, None), (2, None), (5, "f")]


def _is_public(module: str, name: str | None) -> bool:
    """Whether ``from module import name`` (``name`` None: ``import module``, or an attribute
    chain ``module``) uses only the public API: the names in ``orbit_pipelines.__all__``, and
    from the public ``orbit_pipelines.errors`` catalogue its codes (``E1234_NAME``)."""
    public = set(orbit_pipelines.__all__)
    if module == "orbit_pipelines":
        return name is None or name in public
    if module == "orbit_pipelines.errors":
        if name is None:
            return True
        return name in public or (
            re.fullmatch(r"E\d{4}_[A-Z0-9_]+", name) is not None
            and hasattr(orbit_pipelines.errors, name)
        )
    return False


def _non_public_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of every use of orbit_pipelines beyond its public API in ``tree``: an
    import from a submodule or of a name not in ``__all__``, ``import orbit_pipelines.x``,
    ``importlib.import_module("orbit_pipelines.x")`` and ``orbit_pipelines.x`` attributes."""
    found: list[tuple[int, str]] = []

    def ours(module: str) -> bool:
        return module == "orbit_pipelines" or module.startswith("orbit_pipelines.")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and ours(node.module or ""):
            module = node.module or ""
            found += [
                (node.lineno, f"from {module} import {alias.name}")
                for alias in node.names
                if not _is_public(module, alias.name)
            ]
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, f"import {alias.name}")
                for alias in node.names
                if ours(alias.name) and not _is_public(alias.name, None)
            ]
        elif (
            (module := _import_module_arg(node)) is not None
            and ours(module)
            and not _is_public(module, None)
        ):
            found.append((node.lineno, f"import_module({module!r})"))
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "orbit_pipelines"
            and not _is_public("orbit_pipelines", node.attr)
        ):
            found.append((node.lineno, f"orbit_pipelines.{node.attr}"))
    return found


def test_the_examples_use_only_the_public_api() -> None:
    # The examples are built as a user would build their pipelines: from the names in
    # orbit_pipelines.__all__ (and orbit's own error codes), nothing internal.
    files = sorted(EXAMPLES.rglob("*.py"))
    assert len(files) > 10  # the walk really covers the package
    offending = []
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for line, what in _non_public_uses(tree):
            offending.append(f"{path.relative_to(EXAMPLES).as_posix()}:{line} {what}")
    assert offending == [], "orbit_examples uses orbit_pipelines internals: " + ", ".join(offending)


def test_the_public_api_walk_finds_each_spelling_of_an_internal_use() -> None:
    source = (
        "from orbit_pipelines import OrbitStore, run_rows\n"  # public
        "from orbit_pipelines.errors import E3001_SERVICE_TIMEOUT, OrbitError\n"  # public
        "from orbit_pipelines import errors\n"  # public
        "from orbit_pipelines.store.urls import mask_url\n"  # 4
        "from orbit_pipelines.errors import lookup\n"  # 5
        "from orbit_pipelines import step_scope\n"  # 6
        "import orbit_pipelines.processes\n"  # 7
        "import orbit_pipelines\n"
        "x = orbit_pipelines.recovery\n"  # 9
        "y = orbit_pipelines.OrbitStore\n"
        "def f():\n    import importlib\n"
        "    importlib.import_module('orbit_pipelines.store.engine')\n"  # 13
    )
    assert [line for line, _ in _non_public_uses(ast.parse(source))] == [4, 5, 6, 7, 9, 13]


def test_run_batches_is_not_a_way_to_write_a_step() -> None:
    # One way to write a row step: run_rows (a row at a time) or run_frames (a DataFrame
    # chunk at a time). The sink-batch runner stays internal machinery of the executor.
    import orbit_pipelines.execution

    step_functions = {n for n in orbit_pipelines.__all__ if n.startswith("run_")}
    assert step_functions == {"run_rows", "run_frames"}
    assert "run_batches" not in orbit_pipelines.execution.__all__
    assert not hasattr(orbit_pipelines.execution, "run_batches")


def test_importing_the_product_loads_no_example_module() -> None:
    code = (
        "import sys, orbit_pipelines, orbit_pipelines.errors, orbit_pipelines.execution\n"
        "from orbit_pipelines import *\n"
        "assert not [m for m in sys.modules if m.startswith('orbit_examples')], sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_importing_errors_does_not_import_dagster() -> None:
    # The public names load lazily: store/ and execution/ stay free of Dagster at import.
    code = (
        "import sys, orbit_pipelines.errors, orbit_pipelines.execution\n"
        "assert 'dagster' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_public_name_resolves_and_is_documented() -> None:
    names = orbit_pipelines.__all__
    assert len(names) == len(set(names))
    for name in names:
        value = getattr(orbit_pipelines, name)
        assert value is not None, name
        if callable(value) and not name.endswith(("Handler", "Context")):
            assert (value.__doc__ or "").strip(), f"{name} has no docstring"
    for required in (
        "OrbitStore",
        "PostgresCheckpointIOManager",
        "run_rows",
        "run_frames",
        "RowContext",
        "Reconciled",
        "EffectInDoubt",
        "Sum",
        "Count",
        "SumBy",
        "Buffer",
        "Aggregation",
        "ExecutorOptions",
        "make_recovery_sensor",
        "OrbitError",
        "register_error_code",
    ):
        assert required in names, required
    with pytest.raises(AttributeError):
        _ = orbit_pipelines.no_such_name  # type: ignore[attr-defined]


def test_every_public_name_is_in_the_readme_section() -> None:
    readme = (PRODUCT.parent / "README.md").read_text()
    start = readme.index("## Make your own step crash-safe")
    section = readme[start : readme.index("\n## ", start + 1)]
    missing = [n for n in orbit_pipelines.__all__ if f"`{n}`" not in section]
    assert missing == [], f"public names not documented in the README section: {missing}"


def test_register_error_code_checks_family_and_duplicates() -> None:
    registered = register_error_code("E-4901", "public API test: a code of my own", retryable=True)
    assert registered.retryable and orbit_pipelines.errors.is_retryable("E-4901")
    # The same registration again (a module imported twice) is the same code; a different
    # one is refused.
    assert (
        register_error_code("E-4901", "public API test: a code of my own", retryable=True)
        is registered
    )
    with pytest.raises(ValueError, match="already registered"):
        register_error_code("E-4901", "again", retryable=True)
    with pytest.raises(ValueError, match="already registered"):
        register_error_code("E-4901", "public API test: a code of my own", retryable=False)
    with pytest.raises(ValueError, match="already registered"):
        register_error_code("E-4004", "clashes with orbit's own", retryable=False)
    for bad in ("E-6001", "E-0001", "E-10001", "X-1001", "E-1a01"):
        with pytest.raises(ValueError, match="family digit 1-5"):
            register_error_code(bad, "bad", retryable=False)
    no_retry = register_error_code("E-1901", "public API test: bad input", retryable=False)
    assert not orbit_pipelines.errors.is_retryable(no_retry.code)


# -- a job and assets built from the public names only --------------------------------------

E_NEGATIVE = register_error_code("E-1902", "public API test: negative amount", retryable=False)
ORDERS = [{"id": i, "amount": i % 7 - 1} for i in range(40)]  # amount -1 every 7th row


def _charge(row: dict, ctx: RowContext) -> None:
    if row["amount"] < 0:
        raise OrbitError(E_NEGATIVE, f"order {row['id']} has a negative amount")
    ctx.once(f"charge:{row['id']}", lambda: row["amount"])  # zero-argument effect
    ctx.agg["total"].add(row["amount"])
    ctx.agg["orders"].add(1)


@op
def charge(context: OpExecutionContext, orbit_store: OrbitStore) -> dict:
    """Charge each order once."""
    summary = run_rows(
        context,
        ORDERS,
        key="id",
        handler=_charge,
        aggregations={"total": Sum(), "orders": Count()},
        options=ExecutorOptions(batch_size=8, on_error="quarantine"),
    )
    return summary.aggregations


@job
def charge_job() -> None:
    charge()


def test_a_job_from_public_names_runs_and_a_rerun_skips_done_rows(
    db_url: str, dagster_home: Path
) -> None:
    store = OrbitStore(postgres_url=db_url)
    defs = Definitions(
        jobs=[charge_job],
        sensors=[make_recovery_sensor()],
        resources={"orbit_store": store, "io_manager": PostgresCheckpointIOManager(store=store)},
    )
    resolved = defs.get_job_def("charge_job")
    with DagsterInstance.get() as instance:
        result = resolved.execute_in_process(instance=instance)
    assert result.success
    good = [o for o in ORDERS if o["amount"] >= 0]
    assert result.output_for_node("charge") == {
        "total": sum(o["amount"] for o in good),
        "orders": len(good),
    }


# -- run_frames, the chunked DataFrame handler --------------------------------------------


def _price(chunk: pd.DataFrame, fctx: FrameContext) -> pd.DataFrame:
    with fctx.conn.cursor() as cur:  # written in the batch transaction: once per row
        cur.executemany(
            "INSERT INTO priced (id, chunk_no) VALUES (%s, %s)",
            [(int(i), fctx.chunk_no) for i in chunk["id"]],
        )
    net = chunk["gross"] * 0.8
    return pd.DataFrame(
        {
            "error": chunk["gross"]
            .where(chunk["gross"] < 0)
            .map(lambda g: None if pd.isna(g) else "E-1902 gross below zero"),
            "result": net.round(2),
            "net": net,
        },
        index=chunk.index,
    )


@asset
def priced(context: AssetExecutionContext, orbit_store: OrbitStore) -> dict:
    """Net prices, vectorized, per chunk."""
    frame = pd.DataFrame({"id": range(25), "gross": [float(i) for i in range(24)] + [-1.0]})
    summary = run_frames(
        context,
        frame,
        key="id",
        handler=_price,
        aggregations={"net": Sum()},
        options=ExecutorOptions(batch_size=10, on_error="quarantine"),
    )
    return {**summary.aggregations, "done": summary.done, "quarantined": summary.quarantined}


def test_run_frames_in_an_asset_checkpoints_per_chunk(db_url: str, dagster_home: Path) -> None:
    store = OrbitStore(postgres_url=db_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE priced (id int, chunk_no int)")
    with DagsterInstance.get() as instance:
        result = materialize(
            [priced],
            instance=instance,
            resources={"orbit_store": store},
        )
    assert result.success
    out = result.output_for_node("priced")
    assert out == {
        "net": pytest.approx(sum(i * 0.8 for i in range(24))),
        "done": 24,
        "quarantined": 1,
    }
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT chunk_no, count(*) FROM priced GROUP BY 1 ORDER BY 1"
        ).all()
    assert [tuple(r) for r in rows] == [(0, 10), (1, 10), (2, 5)]


def test_public_module_reimports_cleanly() -> None:
    assert importlib.import_module("orbit_pipelines").__all__ == orbit_pipelines.__all__


def test_the_recovery_sensor_takes_the_store_under_any_resource_key(
    db_url: str, dagster_home: Path
) -> None:
    from dagster import build_sensor_context

    sensor_def = make_recovery_sensor("my_recovery", store_key="warehouse_store")
    assert sensor_def.required_resource_keys == {"warehouse_store"}
    store = OrbitStore(postgres_url=db_url)
    defs = Definitions(sensors=[sensor_def], resources={"warehouse_store": store})
    with (
        DagsterInstance.get() as instance,
        build_sensor_context(
            instance=instance,
            resources={"warehouse_store": store},
            repository_def=defs.get_repository_def(),
        ) as context,
    ):
        data = sensor_def.evaluate_tick(context)
    assert data.run_requests == []
    assert "no dead, hung or failed runs" in (data.skip_message or "")


FLAKY = {"fail_chunk": 2}
E_FLAKY = register_error_code("E-3901", "public API test: service hiccup", retryable=True)


def _price_flaky(chunk: pd.DataFrame, fctx: FrameContext) -> pd.DataFrame:
    with fctx.conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO priced (id, chunk_no) VALUES (%s, %s)",
            [(int(i), fctx.chunk_no) for i in chunk["id"]],
        )
    if fctx.chunk_no == FLAKY["fail_chunk"]:
        raise OrbitError(E_FLAKY, "the pricing service hiccupped")
    return pd.DataFrame({"net": chunk["gross"] * 0.5}, index=chunk.index)


@asset
def priced_flaky(context: AssetExecutionContext, orbit_store: OrbitStore) -> float:
    """Half prices; chunk 2 fails while FLAKY says so."""
    frame = pd.DataFrame({"id": range(35), "gross": [float(i) for i in range(35)]})
    summary = run_frames(
        context,
        frame,
        key="id",
        handler=_price_flaky,
        aggregations={"net": Sum()},
        options=ExecutorOptions(batch_size=10, on_error="quarantine"),
    )
    return summary.aggregations["net"]


def test_run_frames_resumes_after_a_failed_chunk_writing_each_row_once(
    db_url: str, dagster_home: Path
) -> None:
    store = OrbitStore(postgres_url=db_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE priced (id int, chunk_no int)")
    with DagsterInstance.get() as instance:
        FLAKY["fail_chunk"] = 2
        first = materialize(
            [priced_flaky],
            instance=instance,
            resources={"orbit_store": store},
            raise_on_error=False,
        )
        assert not first.success  # a retryable code stops the step, it is not quarantined
        FLAKY["fail_chunk"] = -1
        second = materialize(
            [priced_flaky],
            instance=instance,
            resources={"orbit_store": store},
            tags={"orbit/root_run": first.run_id},
        )
    assert second.success
    assert second.output_for_node("priced_flaky") == pytest.approx(sum(range(35)) * 0.5)
    with store.engine.connect() as conn:
        ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM priced ORDER BY id")]
    # Chunks 0 and 1 committed with their writes; chunk 2's writes rolled back with its
    # rows; the rerun handed the handler rows 20..34 only.
    assert ids == list(range(35))


@multi_asset(outs={"good_total": AssetOut(), "bad_count": AssetOut()})
def split_orders(context: AssetExecutionContext, orbit_store: OrbitStore):
    """Two assets from one row step."""
    summary = run_rows(
        context,
        ORDERS,
        key="id",
        handler=_charge,
        aggregations={"total": Sum(), "orders": Count()},
        options=ExecutorOptions(batch_size=16, on_error="quarantine"),
    )
    return summary.aggregations["total"], summary.quarantined


def test_run_rows_in_a_multi_asset_records_counts_on_each_asset(
    db_url: str, dagster_home: Path
) -> None:
    with DagsterInstance.get() as instance:
        result = materialize(
            [split_orders],
            instance=instance,
            resources={"orbit_store": OrbitStore(postgres_url=db_url)},
        )
        assert result.success
        good = [o for o in ORDERS if o["amount"] >= 0]
        assert result.output_for_node("split_orders", "good_total") == sum(
            o["amount"] for o in good
        )
        assert result.output_for_node("split_orders", "bad_count") == len(ORDERS) - len(good)
        for key in ("good_total", "bad_count"):
            event = instance.get_latest_materialization_event(AssetKey(key))
            assert event is not None and event.asset_materialization is not None
            assert event.asset_materialization.metadata["rows_quarantined"].value == len(
                ORDERS
            ) - len(good)
