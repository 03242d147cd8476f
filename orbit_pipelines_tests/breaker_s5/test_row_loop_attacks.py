"""Breaker attacks on 781ca8a (per-row cost): batch key digests, the reused clean RowContext,
plain done rows as two appends, recent handled keys in a set. Each pins what held."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, text

from orbit_pipelines.execution import RowContext
from orbit_pipelines.execution.done_set import HASH_DTYPE
from orbit_pipelines.execution.executor import _RECENT_KEYS
from orbit_pipelines.execution.keys import batch_keys, canonical_key
from orbit_pipelines_tests.breaker_s5.mixed_child import IDEMPOTENT_DDL, RECEIVER_DDL, keys
from orbit_pipelines_tests.execution.helpers import executor
from orbit_pipelines_tests.processes import ChildProcesses, wait_for

# Digests computed with keys.py as it was before 781ca8a (git show 781ca8a~1:...): ledgers
# already written hold these, so the batch path must give exactly them.
GOLDEN: dict[Any, str] = {
    0: "d0ae882d36fc6170139b1bf2e05cacbe",
    1: "d89e5e1cf654b925e821eb926a1026f5",
    -1: "e788fd1e5de0dc32eb963e54aba818d8",
    2**63: "461445eb8162c890f2ae3df263c0b21f",
    -(2**63) - 1: "4ccce7c5f7b4485bc04b5b6142bd00f8",
    10**30: "db415488da6777d29d611129689c28ef",
    "1": "cea3878a334b240469d159ff840b6434",
    "a": "27c35e6e9373877f29e562464e46497e",
    "x" * 5000: "75d0878b8974254f2150d1f569930205",
    "a\x1fb": "065ab5741cdfad44687cf119c1eb4ec9",
    "\x1f": "01d40548a78e70851885ebb185b56016",
    " ": "aaa23663da8d05fecd3b0dd39ceaf26e",
    "ß": "188444dcd5e99c99a0b2344070dc02b7",
    "😀": "742a00cb7e7d4effd92d39ffe41c72cf",
    "k-é": "7222e15681f147cd1636bc0cadeb4f04",
    "true": "b30ee95ec6cda01eb712d912431fe867",
    "None": "9781e576fbd9086ba1e97c87f1bd1575",
    "1.0": "5f8a2d42fe0030845fc28162720f81ef",
}


def _done(ex: Any) -> Any:
    return ex.load_done()


@pytest.mark.parametrize("kind", [int, str])
def test_the_batch_path_gives_the_digests_of_the_rule_before_781ca8a(
    engine: Engine, kind: type
) -> None:
    wanted = {k: bytes.fromhex(h) for k, h in GOLDEN.items() if type(k) is kind}
    assert batch_keys(list(wanted)) == ([str(k) for k in wanted], list(wanted.values()))
    with executor(engine, root_run_id=uuid.uuid4().hex, batch_size=4) as ex:
        summary = ex.run([{"id": k} for k in wanted], key="id", handler=lambda r, c: None)
        done = _done(ex)
    assert summary.done == len(wanted) == len(done)
    assert done.contains(np.frombuffer(b"".join(wanted.values()), dtype=HASH_DTYPE)).all()


def test_keys_equal_after_normalisation_are_one_row_across_and_within_batches(
    engine: Engine,
) -> None:
    # 1, 1.0, numpy 1, Decimal 1 are one key; "1" and True are two others. The first
    # batch is all int (the batch path), the others mixed (key by key).
    order: list[Any] = [1, 2, 1, 3, 1.0, np.int64(1), Decimal("1"), "1", True, np.int32(2), "1"]
    calls: list[Any] = []
    with executor(engine, root_run_id=uuid.uuid4().hex, batch_size=4) as ex:
        summary = ex.run(
            [{"id": k} for k in order], key="id", handler=lambda r, c: calls.append(r["id"])
        )
    assert [type(c) for c in calls] == [int, int, int, str, bool]
    assert (summary.done, summary.duplicates) == (5, 6)


def test_missing_and_unusable_keys_are_quarantined_never_handled(engine: Engine) -> None:
    bad: list[Any] = [None, math.nan, "", "a\x00", np.float64("nan"), "\ud800"]
    order: list[Any] = ["ok", *bad, "ok2", 7]
    calls: list[Any] = []
    root = uuid.uuid4().hex
    with executor(engine, root_run_id=root, batch_size=3, on_error="quarantine") as ex:
        summary = ex.run(
            [{"id": k} for k in order], key="id", handler=lambda r, c: calls.append(r["id"])
        )
    assert calls == ["ok", "ok2", 7]
    assert (summary.done, summary.quarantined) == (3, len(bad))
    # A second attempt over the same input handles nothing again.
    calls.clear()
    with executor(engine, root_run_id=root, run_id="run-2", batch_size=3) as ex:
        again = ex.run([{"id": k} for k in order], key="id", handler=lambda r, c: calls.append(r))
    assert calls == [] and again.skipped_already_done == len(order)


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_a_kept_context_and_rows_that_record_only_sometimes(
    engine: Engine, batch_size: int
) -> None:
    # The handler keeps the first row's ctx and uses it in later rows (the executor reuses
    # one object); results and effects must land on the row that made them, never on the
    # clean row after a dirty one, and a raise leaves nothing behind.
    with engine.begin() as conn:
        conn.execute(text(RECEIVER_DDL))
    kept: list[RowContext] = []
    n = 60

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        i = row["id"]
        kept.append(ctx)
        stale = kept[0]
        assert stale.row_key == str(i) and ctx._result_text is None and ctx._tokens is None
        if i % 3 == 0:
            stale.emit({"i": i})
        if i % 4 == 0:

            def write(conn: Any, key: str = f"fx-{i}") -> None:
                conn.execute("INSERT INTO public.receiver_s5 VALUES (%s, 1)", (key,))

            stale.once(f"fx-{i}", write, receiver="transactional")
        if i % 11 == 10:
            ctx.emit("half")
            raise ValueError("poison")

    root = uuid.uuid4().hex
    with executor(engine, root_run_id=root, batch_size=batch_size, on_error="quarantine") as ex:
        summary = ex.run([{"id": i} for i in range(n)], key="id", handler=handle)
    poison = {i for i in range(n) if i % 11 == 10}
    assert (summary.done, summary.quarantined) == (n - len(poison), len(poison))
    with engine.connect() as conn:
        results: dict[str, Any] = {
            key: value
            for key, value in conn.execute(
                text(
                    "SELECT row_key, result FROM orbit.row_outcomes "
                    "WHERE root_run_id = :r AND result IS NOT NULL"
                ),
                {"r": root},
            ).all()
        }
        quarantined = set(
            conn.execute(
                text(
                    "SELECT row_key FROM orbit.row_outcomes WHERE root_run_id = :r AND status = 'quarantined'"
                ),
                {"r": root},
            ).scalars()
        )
        fx = set(conn.execute(text("SELECT effect_key FROM public.receiver_s5")).scalars())
    assert results == {str(i): {"i": i} for i in range(0, n, 3) if i not in poison}
    assert quarantined == {str(i) for i in poison}
    # A transactional effect of a row that raised after it commits with the batch (as
    # before 781ca8a): recorded as happened, so a retry of the row never repeats it.
    assert fx == {f"fx-{i}" for i in range(0, n, 4)}


def test_duplicate_met_in_the_recent_set_and_after_the_move_to_levels(engine: Engine) -> None:
    # The same key 3 times: in the batch, in the next batch (recent set), and after the
    # recent set moved into the levels (past _RECENT_KEYS), with str keys (batch path).
    n = _RECENT_KEYS + 300
    order = [f"k{i}" for i in range(n)]
    order[5:5] = ["k3", "k3"]
    order.insert(1200, "k3")
    order.append("k3")
    order.append(f"k{n - 5}")
    calls: Counter[str] = Counter()
    with executor(engine, root_run_id=uuid.uuid4().hex, batch_size=500) as ex:
        summary = ex.run(
            ({"id": k} for k in order), key="id", handler=lambda r, c: calls.update([r["id"]])
        )
    assert len(calls) == n and set(calls.values()) == {1}
    assert (summary.done, summary.duplicates) == (n, 5)


ROWS = 3000
BATCH = 50
KILLS = 6


def test_sigkill_mid_batch_mixed_rows_every_row_and_effect_exactly_once(
    engine: Engine, db_url: str, children: ChildProcesses, tmp_path: Path
) -> None:
    with engine.begin() as conn:
        conn.execute(text(RECEIVER_DDL))
        conn.execute(text(IDEMPOTENT_DDL))
    seed = int(time.time())
    rng = random.Random(seed)
    args = [sys.executable, "-m", "orbit_pipelines_tests.breaker_s5.mixed_child"]
    args += [db_url, str(tmp_path), str(ROWS), str(BATCH)]
    log = tmp_path / "child.log"
    invocations = tmp_path / "invocations"

    def handled() -> int:
        return invocations.read_bytes().count(b"\n") if invocations.exists() else 0

    kills = 0
    for target in sorted(rng.sample(range(BATCH, ROWS - 4 * BATCH), KILLS)):
        (tmp_path / "ready").unlink(missing_ok=True)
        before = handled()
        proc = children.start(args, log_path=log)

        def reached(
            p: subprocess.Popen[bytes] = proc, b: int = before, n: int = target // KILLS
        ) -> bool:
            return handled() - b >= n or p.poll() is not None

        wait_for(
            reached,
            timeout_s=120,
            interval_s=0.005,
            what="rows handled",
        )
        time.sleep(rng.uniform(0, 0.03))  # anywhere inside the batch in flight
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        kills += 1
    assert kills >= 3, f"only {kills} kills landed (seed {seed})"

    final = children.start(args, log_path=log)
    assert final.wait(timeout=300) == 0, log.read_text()[-3000:]
    with engine.connect() as conn:
        results: dict[str, Any] = {
            key: value
            for key, value in conn.execute(
                text("SELECT row_key, result FROM orbit.row_outcomes WHERE result IS NOT NULL")
            ).all()
        }
        not_done = conn.execute(
            text("SELECT count(*) FROM orbit.row_outcomes WHERE status <> 'done'")
        ).scalar_one()
        fx = conn.execute(
            text("SELECT count(*), min(applied), max(applied) FROM receiver_s5")
        ).one()
        idem = conn.execute(text("SELECT count(*), sum(requests) FROM receiver_s5_idem")).one()
    with executor(engine, root_run_id="s5-root", step_key="rows", run_id="probe") as ex:
        done = ex.load_done()
    wanted = np.frombuffer(b"".join(canonical_key(k).digest for k in range(ROWS)), dtype=HASH_DTYPE)
    assert len(done) == ROWS and done.contains(wanted).all(), f"seed {seed}"
    assert not_done == 0
    assert results == {str(i): {"i": i} for i in range(0, ROWS, 3)}, f"seed {seed}"
    assert tuple(fx) == (len(range(0, ROWS, 5)), 1, 1), f"effects exactly once (seed {seed})"
    wanted_idem = len(range(0, ROWS, 7))
    assert idem[0] == wanted_idem, f"every idempotent effect requested (seed {seed})"
    assert idem[1] - wanted_idem <= kills, f"one request repeated at most per kill (seed {seed})"
    calls = Counter(int(line) for line in invocations.read_text().split())
    assert set(calls) == set(range(ROWS))
    assert sum(calls.values()) - ROWS <= BATCH * kills, f"seed {seed}"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["done"] + summary["skipped"] - summary["duplicates"] <= len(keys(ROWS))
