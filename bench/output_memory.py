"""Peak memory of storing and loading a ~100 MB DataFrame step output.

Each phase runs in a fresh subprocess and reads the kernel's RSS high-water mark (VmHWM;
tracemalloc does not see Arrow's allocations). A phase reports
``(peak RSS - RSS before the frame existed) / frame size``: the frame itself counts as 1x,
so 2.5x means at most 1.5 extra copies at the worst moment. In the write phase the
high-water mark is reset (``/proc/self/clear_refs``) after the frame is built and the frame
counts as exactly its size, so numpy's temporaries while *building* the test frame (kept
by the allocator) do not count against the IO path.
Both phases run with Arrow's default allocator (mimalloc) and with
``ARROW_DEFAULT_MEMORY_POOL=system``.

    ORBIT_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/output_memory.py

It creates (and drops) its own database on that server. Prints one JSON object.

``io_managers``: the same frame through a real two-op job (``execute_in_process``), once
with ``PostgresCheckpointIOManager`` and once with Dagster's default filesystem IO manager
(``PickledObjectFilesystemIOManager``, what ``fs_io_manager`` builds), each in a fresh
process; ``handle_output`` and ``load_input`` are timed around the real methods.
``checkpoint_over_fs_write`` / ``_read``: the checkpoint IO manager's seconds over the
filesystem IO manager's (above 1: slower). The filesystem one writes a local file; the
checkpoint one writes to Postgres, which a re-execution on another machine can read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

TARGET_MB = float(os.environ.get("ORBIT_BENCH_FRAME_MB", "100"))


def rss_kb() -> int:
    """Current resident set size (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def peak_rss_kb() -> int:
    """The RSS high-water mark since start or the last ``reset_peak``."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def make_frame(target_mb: float):  # type: ignore[no-untyped-def]
    """A frame of int, float, tz datetime, nullable int, categorical and str columns."""
    import numpy as np
    import pandas as pd

    # About 48 bytes a row across these columns (measured with memory_usage(deep=True)).
    rows = int(target_mb * 1024 * 1024 / 48)
    rng = np.random.default_rng(7)
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype="int64"),
            "amount": rng.random(rows),
            "at": pd.date_range("2026-01-01", periods=rows, freq="s", tz="UTC"),
            "qty": pd.array(rng.integers(0, 100, rows), dtype="Int64"),
            "status": pd.Categorical(rng.choice(["new", "sent", "lost"], rows)),
            "code": pd.Series(rng.integers(0, 10**6, rows)).astype("str"),
        }
    )


def phase(name: str, url: str) -> dict[str, float]:
    """Run one phase in this process (called in a subprocess)."""
    import pandas as pd  # noqa: F401 -- imported before the baseline is taken
    import pyarrow as pa

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL") == "system":
        # What PostgresCheckpointIOManager(use_system_allocator=True) does in a run worker.
        pa.set_memory_pool(pa.system_memory_pool())

    from orbit_pipelines.store.engine import create_store_engine
    from orbit_pipelines.store.output_codecs import choose_encoding, decode
    from orbit_pipelines.store.step_outputs import (
        OutputKey,
        find_output,
        read_payload,
        write_output,
    )

    engine = create_store_engine(url)
    with engine.connect() as conn:  # connect once so the driver's memory is in the baseline
        conn.exec_driver_sql("SELECT 1")
    key = OutputKey("bench-run", "big", "result")
    frame_bytes = float(os.environ["ORBIT_BENCH_FRAME_BYTES"] or 0)
    baseline = rss_kb()
    started = time.perf_counter()
    if name == "write":
        frame = make_frame(TARGET_MB)
        frame_bytes = float(frame.memory_usage(deep=True).sum())
        # Count the frame as exactly 1x; what building it left in the allocator is not the
        # IO path's doing.
        baseline = rss_kb() - int(frame_bytes / 1024)
        reset_peak()
        started = time.perf_counter()
        encoding = choose_encoding(frame, allow_pickle=False)
        stored = write_output(
            engine,
            key,
            root_run_id="bench-run",
            format=encoding.format,
            type_name=encoding.type_name,
            row_count=encoding.row_count,
            code_version=None,
            config_hash=None,
            write_payload=encoding.write,
        )
        stored_bytes = stored.size_bytes
    else:
        with engine.connect() as conn:
            found = find_output(conn, key)
        assert found is not None
        payload = read_payload(engine, found)
        frame = decode(found.format, payload, allow_pickle=False)
        del payload
        frame_bytes = float(frame.memory_usage(deep=True).sum())
        stored_bytes = found.size_bytes
    seconds = time.perf_counter() - started
    peak = peak_rss_kb()
    return {
        "frame_mb": round(frame_bytes / 2**20, 1),
        "stored_mb": round(stored_bytes / 2**20, 1),
        "peak_over_baseline_mb": round((peak - baseline) / 1024, 1),
        "peak_ratio": round((peak - baseline) * 1024 / frame_bytes, 2),
        "seconds": round(seconds, 2),
    }


TIMES: dict[str, float] = {}


def io_manager_phase(kind: str, url: str, base_dir: str) -> dict[str, float]:
    """Write and read the frame through ``kind``'s IO manager in a real job (a subprocess)."""
    from dagster import InputContext, OutputContext, io_manager, job, op

    # The class fs_io_manager / FilesystemIOManager build; dagster exports only the factories.
    from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager

    from orbit_pipelines import OrbitStore, PostgresCheckpointIOManager

    def timed(name: str, call: Any) -> Any:
        started = time.perf_counter()
        try:
            return call()
        finally:
            TIMES[name] = time.perf_counter() - started

    class TimedCheckpoint(PostgresCheckpointIOManager):
        def handle_output(self, context: OutputContext, obj: Any) -> None:
            # consume's int output goes through here too: time only the frame's write.
            name = "write_s" if context.step_key == "produce" else "write_int_s"
            timed(name, lambda: super(TimedCheckpoint, self).handle_output(context, obj))

        def load_input(self, context: InputContext) -> Any:
            return timed("read_s", lambda: super(TimedCheckpoint, self).load_input(context))

    class TimedFs(PickledObjectFilesystemIOManager):
        def handle_output(self, context: OutputContext, obj: Any) -> None:
            name = "write_s" if context.step_key == "produce" else "write_int_s"
            timed(name, lambda: super(TimedFs, self).handle_output(context, obj))

        def load_input(self, context: InputContext) -> Any:
            return timed("read_s", lambda: super(TimedFs, self).load_input(context))

    @io_manager
    def timed_fs(_init: Any) -> TimedFs:
        return TimedFs(base_dir=base_dir)

    @op
    def produce() -> Any:
        return make_frame(TARGET_MB)

    @op
    def consume(frame: Any) -> int:
        return len(frame)

    @job
    def frame_job() -> None:
        consume(produce())

    if kind == "checkpoint":
        manager: Any = TimedCheckpoint(store=OrbitStore(postgres_url=url))
    else:
        manager = timed_fs
    result = frame_job.execute_in_process(resources={"io_manager": manager})
    assert result.success
    return {"write_s": round(TIMES["write_s"], 4), "read_s": round(TIMES["read_s"], 4)}


def compare_io_managers(url: str) -> dict[str, Any]:
    """Both IO managers on the same frame, each in a fresh process; times and ratios."""
    import tempfile

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="orbit_bench_fs_io_") as base_dir:
        for kind in ("checkpoint", "fs"):
            done = subprocess.run(
                [sys.executable, __file__, "io_manager", kind, url, base_dir],
                capture_output=True,
                text=True,
                check=True,
            )
            out[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        stored = sum(p.stat().st_size for p in Path(base_dir).rglob("*") if p.is_file())
    out["fs_stored_mb"] = round(stored / 2**20, 1)
    out["checkpoint_over_fs_write"] = round(out["checkpoint"]["write_s"] / out["fs"]["write_s"], 2)
    out["checkpoint_over_fs_read"] = round(out["checkpoint"]["read_s"] / out["fs"]["read_s"], 2)
    out["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> None:
    """Create a scratch database, run write then read in fresh processes, print JSON."""
    if len(sys.argv) == 3:
        print(json.dumps(phase(sys.argv[1], sys.argv[2])))
        return
    if len(sys.argv) == 5 and sys.argv[1] == "io_manager":
        print(json.dumps(io_manager_phase(sys.argv[2], sys.argv[3], sys.argv[4])))
        return
    import psycopg
    from sqlalchemy.engine import make_url

    from orbit_pipelines.store.engine import create_store_engine
    from orbit_pipelines.store.migrations import upgrade
    from orbit_pipelines.store.urls import resolve_url

    admin = resolve_url()
    name = f"orbit_bench_{uuid.uuid4().hex[:10]}"
    admin_psycopg = make_url(admin).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin_psycopg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_psycopg).set(database=name).render_as_string(False)
    try:
        engine = create_store_engine(url)
        upgrade(engine)
        engine.dispose()
        results: dict[str, object] = {"target_ratio": 2.5}
        ratios = []
        for pool in ("default", "system"):
            env = dict(os.environ, ORBIT_BENCH_FRAME_BYTES="")
            if pool == "system":
                env["ARROW_DEFAULT_MEMORY_POOL"] = "system"
            for step in ("write", "read"):
                out = subprocess.run(
                    [sys.executable, __file__, step, url],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                measured = json.loads(out.stdout.strip().splitlines()[-1])
                results[f"{step}_{pool}_pool"] = measured
                if pool == "system":
                    ratios.append(measured["peak_ratio"])
        # The IO manager runs with the system pool (use_system_allocator, on by default).
        results["ok"] = max(ratios) < 2.5
        results["io_managers"] = compare_io_managers(url)
        results["load_avg"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(results, indent=2))
    finally:
        with psycopg.connect(admin_psycopg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
