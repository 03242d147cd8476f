"""Aggregation state of a step, saved in the transaction of the rows it reflects."""

from __future__ import annotations

from typing import Any

import psycopg

from orbit_pipelines.store import value_codec
from orbit_pipelines.store.named_sql import load_sql


def load_aggregations(
    conn: psycopg.Connection, root_run_id: str, step_key: str
) -> tuple[dict[str, Any], int]:
    """Saved states by name, and how many rows they reflect (0 and ``{}`` when none)."""
    with conn.cursor() as cur:
        cur.execute(
            load_sql("aggregation_load"), {"root_run_id": root_run_id, "step_key": step_key}
        )
        states: dict[str, Any] = {}
        reflected = 0
        for name, state, rows_reflected in cur.fetchall():
            states[name] = value_codec.decode(state)
            reflected = max(reflected, int(rows_reflected))
        return states, reflected


def save_aggregations(
    conn: psycopg.Connection,
    root_run_id: str,
    step_key: str,
    states: dict[str, Any],
    rows_reflected: int,
) -> None:
    """Upsert every state inside the caller's transaction."""
    if not states:
        return
    with conn.cursor() as cur:
        cur.execute(
            load_sql("aggregation_save"),
            {
                "root_run_id": root_run_id,
                "step_key": step_key,
                "names": list(states),
                "states": [value_codec.encode(s) for s in states.values()],
                "rows_reflected": rows_reflected,
            },
        )
