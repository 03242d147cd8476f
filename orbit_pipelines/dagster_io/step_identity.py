"""What makes a stored step output valid: the step's code version and a hash of its config.

Everything here that reaches past Dagster's public surface is in this one module, and
``orbit_pipelines_tests/dagster_io/test_io_manager_versions.py`` fails loudly when an
upgrade moves it:
- ``StepExecutionContext.resolved_run_config.ops[node].config``: the resolved (defaults
  filled) config of any node of the job, also of a step this run does not execute.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

from dagster import OpDefinition, OutputContext

SOURCE_PREFIX = "source:"


def node_name(step_key: str) -> str:
    """The node handle of a step key (``op`` / ``graph.op``), dropping a dynamic ``[key]``."""
    return step_key.split("[", 1)[0]


def code_version(op_def: OpDefinition, output_name: str, *, from_source: bool) -> str | None:
    """The output's ``code_version`` (set on the op or the Out); else a hash of the op's source.

    The source hash makes an unversioned op safe too: editing it invalidates its stored
    outputs. ``None`` when neither is available (e.g. source not on disk).
    """
    declared = op_def.output_def_named(output_name).code_version
    if declared is not None:
        return declared
    if not from_source:
        return None
    fn = getattr(op_def.compute_fn, "decorated_fn", None)
    if fn is None:
        return None
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    return SOURCE_PREFIX + hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def config_hash(config: Any) -> str:
    """A stable hash of an op's resolved config."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def step_config_hash(context: OutputContext, step_context: Any) -> str | None:
    """Hash of the config the current run gives the node of ``context.step_key``."""
    try:
        ops = step_context.resolved_run_config.ops
        node_config = ops[node_name(context.step_key)].config
    except (AttributeError, KeyError):
        return None
    return config_hash(node_config)
