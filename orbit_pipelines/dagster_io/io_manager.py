"""The checkpoint IO manager: every step output goes to Postgres and comes back from there.

Keyed by the run that produced an output, so a re-execution from failure loads the outputs
of the steps it skips from the run that actually ran them (Dagster walks the run lineage
for us and puts that run in ``upstream_output.run_id``). Outputs cross process boundaries
through Postgres only, so the multiprocess executor (and k8s/celery executors sharing the
database) work unchanged.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from dagster import (
    ConfigurableIOManager,
    DagsterInvariantViolationError,
    InitResourceContext,
    InputContext,
    MetadataValue,
    OutputContext,
)
from pydantic import Field

from orbit_pipelines.dagster_io.resources import OrbitStore
from orbit_pipelines.dagster_io.step_identity import code_version, step_config_hash
from orbit_pipelines.errors import (
    E2008_BAD_CONFIG,
    E4003_STALE_CHECKPOINT,
    E4005_CHECKPOINT_MISSING,
    OrbitError,
)
from orbit_pipelines.store.output_codecs import choose_encoding, decode
from orbit_pipelines.store.step_outputs import (
    DEFAULT_CHUNK_BYTES,
    OutputKey,
    StoredOutput,
    find_latest_in_group,
    find_output,
    read_payload,
    write_output,
)
from orbit_pipelines.store.urls import describe_target
from orbit_pipelines.tags import root_run_id_of


class PostgresCheckpointIOManager(ConfigurableIOManager):
    """Stores step outputs in ``orbit.step_outputs`` (JSON, Parquet, or opt-in pickle).

    Loading checks that the producing step still has the code version and config it had
    when the output was stored, and fails with E-4003 instead of feeding stale data.
    """

    store: OrbitStore = Field(description="The orbit Postgres store.")
    allow_pickle: bool = Field(
        default=False,
        description="Store values that are neither DataFrames nor plain JSON with pickle. "
        "Off by default: unpickling what a database hands back runs code.",
    )
    chunk_bytes: int = Field(
        default=DEFAULT_CHUNK_BYTES, description="Bytes per stored chunk of a large output."
    )
    check_versions: bool = Field(
        default=True,
        description="Refuse to load an output whose producing step's code version or config "
        "changed since it was stored.",
    )
    version_from_source: bool = Field(
        default=True,
        description="For an op without code_version, use a hash of its source as its version.",
    )

    use_system_allocator: bool = Field(
        default=True,
        description="Make Arrow allocate with the system allocator in this process. Its "
        "default (mimalloc) keeps freed memory, so decoding a large DataFrame peaks near 3x "
        "its size instead of about 2x (bench/output_memory.py).",
    )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Pick Arrow's allocator for this run worker (see ``use_system_allocator``)."""
        if self.use_system_allocator:
            pa.set_memory_pool(pa.system_memory_pool())

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        """Encode and store ``obj`` under the producing run; attach size/rows/location metadata."""
        encoding = choose_encoding(obj, allow_pickle=self.allow_pickle)
        step_context = context.step_context
        run = step_context.dagster_run
        stored = write_output(
            self.store.engine,
            OutputKey(context.run_id, context.step_key, context.name, context.mapping_key or ""),
            root_run_id=root_run_id_of(run),
            format=encoding.format,
            type_name=encoding.type_name,
            row_count=encoding.row_count,
            code_version=code_version(
                context.op_def, context.name, from_source=self.version_from_source
            ),
            config_hash=step_config_hash(context, step_context),
            write_payload=encoding.write,
            chunk_bytes=self.chunk_bytes,
        )
        metadata: dict[str, Any] = {
            "bytes": stored.size_bytes,
            "format": stored.format,
            "content_hash": stored.content_hash,
            "stored_in": MetadataValue.text(self._where(stored)),
        }
        if stored.row_count is not None:
            metadata["rows"] = stored.row_count
        context.add_output_metadata(metadata)

    def load_input(self, context: InputContext) -> Any:
        """Load the upstream output from the run that produced it (see module docstring)."""
        upstream = context.upstream_output
        if upstream is None:
            raise OrbitError(
                E2008_BAD_CONFIG,
                f"input '{context.name}' has no upstream step output to load",
                hint="this IO manager loads step outputs; give root inputs a value or an "
                "input manager",
            )
        step_context = context.step_context
        run = step_context.dagster_run
        root_run_id = root_run_id_of(run)
        stored = self._find(context, upstream, root_run_id)
        if self.check_versions:
            self._check_producer(upstream, step_context, stored, run.run_id)
        payload = read_payload(self.store.engine, stored)
        value = decode(stored.format, payload, allow_pickle=self.allow_pickle)
        del payload
        if stored.run_id != run.run_id:
            context.log.info(
                f"loaded '{upstream.name}' of step '{upstream.step_key}' from run "
                f"{stored.run_id} ({stored.size_bytes} bytes, {stored.format})"
            )
        return value

    def _find(self, context: InputContext, upstream: OutputContext, root: str) -> StoredOutput:
        mapping_key = upstream.mapping_key or ""
        try:
            producer: str | None = upstream.run_id
        except DagsterInvariantViolationError:
            producer = None
        with self.store.engine.connect() as conn:
            stored = None
            if producer is not None:
                key = OutputKey(producer, upstream.step_key, upstream.name, mapping_key)
                stored = find_output(conn, key)
            if stored is None:
                # Dagster found no producing run in the lineage (it does not know about
                # outputs stored outside its event log), or that run stored nothing here
                # (e.g. it used another IO manager). The group is one logical run: its
                # newest copy of this output is the one a re-execution must continue from.
                stored = find_latest_in_group(
                    conn, root, upstream.step_key, upstream.name, mapping_key
                )
                if stored is not None:
                    context.log.warning(
                        f"no stored '{upstream.name}' of step '{upstream.step_key}' for run "
                        f"{producer}; using the newest one of run group {root}, "
                        f"stored by run {stored.run_id}"
                    )
        if stored is None:
            raise OrbitError(
                E4005_CHECKPOINT_MISSING,
                f"no stored output '{upstream.name}' of step '{upstream.step_key}' in run "
                f"{producer} or anywhere in run group {root}",
                hint=f"re-execute step '{upstream.step_key}' too (in the Dagster UI select it "
                f"and its downstream steps), or start over: `orbit restart {root}`",
            )
        return stored

    def _check_producer(
        self, upstream: OutputContext, step_context: Any, stored: StoredOutput, run_id: str
    ) -> None:
        current_version = code_version(
            upstream.op_def, upstream.name, from_source=self.version_from_source
        )
        current_config = step_config_hash(upstream, step_context)
        changes = []
        if stored.code_version is not None and current_version != stored.code_version:
            changes.append(f"code version {stored.code_version} then, {current_version} now")
        if stored.config_hash is not None and current_config != stored.config_hash:
            changes.append(f"config hash {stored.config_hash} then, {current_config} now")
        if not changes:
            return
        root = stored.root_run_id
        raise OrbitError(
            E4003_STALE_CHECKPOINT,
            f"step '{upstream.step_key}' changed since run {stored.run_id} stored its output "
            f"'{upstream.name}' ({'; '.join(changes)}); loading it would feed stale data",
            hint=f"re-run step '{upstream.step_key}': `orbit restart {root}` starts the job "
            f"over, or in the Dagster UI re-execute run {run_id} from step "
            f"'{upstream.step_key}' (select it and everything downstream)",
        )

    def _where(self, stored: StoredOutput) -> str:
        return (
            f"postgres orbit.step_outputs #{stored.output_id} (run {stored.run_id}, "
            f"step {stored.step_key}) on {describe_target(self.store.engine.url)}"
        )
