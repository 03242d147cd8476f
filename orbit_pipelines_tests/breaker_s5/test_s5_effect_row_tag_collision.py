"""Breaker s5 (failed on 6064d81, 3 of 3): an effect key reused by another row was E-4007 only
when the two rows' key digests differed in their first 4 bytes (orbit.effects.row_tag in the
first form of migration 0008). 'order-51654' and 'order-64744' share them (blake2b-16
prefix e9242146): the second row's reuse was taken for the same row, its effect was never
called and it got the first row's result. The tag is 8 bytes now."""

from __future__ import annotations

import uuid
from hashlib import blake2b
from typing import Any

import pytest
from sqlalchemy import Engine

from orbit_pipelines.execution import RowContext, StepFailed
from orbit_pipelines_tests.execution.helpers import executor

A, B = "order-51654", "order-64744"


@pytest.mark.parametrize("receiver", ["idempotent", "transactional", "unsafe"])
def test_a_key_reused_by_a_row_with_a_colliding_tag_is_still_e4007(
    engine: Engine, receiver: str
) -> None:
    assert (
        blake2b(A.encode(), digest_size=16).digest()[:4]
        == (blake2b(B.encode(), digest_size=16).digest()[:4])
    )
    calls: list[str] = []

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        key = row["id"]

        def effect(*_args: Any) -> str:
            calls.append(key)
            return key

        ctx.once("shared", effect, receiver=receiver)  # type: ignore[arg-type]

    with (
        pytest.raises(StepFailed) as failed,
        executor(engine, root_run_id=uuid.uuid4().hex, batch_size=1) as ex,
    ):
        ex.run([{"id": A}, {"id": B}], key="id", handler=handle)
    assert "E-4007" in str(failed.value)
    assert calls == [A]
