"""Issue 12, item 1: an infrastructure fault is never a row's fault.

A database out of connections, a backend terminated under the step, or a handler that
raises a psycopg connection/server error: the step stops with StepFailed(E-3010,
retryable), nothing about the row is recorded (not quarantined, not failed), and a rerun
with a healthy database handles it, its effect exactly once.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg.errors
import pytest
from sqlalchemy import Engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from orbit_pipelines.errors import OrbitError, is_retryable
from orbit_pipelines.execution import ExecutorOptions, RowContext, RowExecutor, RunScope
from orbit_pipelines.execution.scope import OnError
from orbit_pipelines.store.engine import create_store_engine
from orbit_pipelines.store.faults import is_infrastructure

INFRA = "E-3010"


def _executor(
    engine: Engine, root: str, run_id: str, *, on_error: OnError = "quarantine", batch_size: int = 1
) -> RowExecutor:
    return RowExecutor(
        engine,
        RunScope(root_run_id=root, run_id=run_id, step_key="step"),
        ExecutorOptions(batch_size=batch_size, on_error=on_error, heartbeat_every_s=0.5),
    )


def _ledger(engine: Engine, root: str) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT row_key, status, error_code FROM orbit.row_outcomes WHERE root_run_id = :r"
            ),
            {"r": root},
        ).all()
    return {k: (s, c) for k, s, c in rows}


@pytest.fixture
def limited_role(db_url: str) -> Iterator[Callable[[int], Engine]]:
    """Make a login role limited to N connections on this test's database.

    A role is cluster-wide: it gets a unique name and is always dropped, its grants first.
    """
    made: list[tuple[str, Engine]] = []

    def make(limit: int) -> Engine:
        role = f"orbit_lim_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {int(limit)}')
            made.append(
                (
                    role,
                    create_store_engine(
                        make_url(db_url).set(username=role).render_as_string(hide_password=False)
                    ),
                )
            )
            for grant in (
                'GRANT USAGE, CREATE ON SCHEMA orbit TO "{r}"',
                'GRANT ALL ON ALL TABLES IN SCHEMA orbit TO "{r}"',
                'GRANT ALL ON ALL SEQUENCES IN SCHEMA orbit TO "{r}"',
                'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{r}"',
            ):
                admin.execute(grant.format(r=role))
        return made[-1][1]

    try:
        yield make
    finally:
        with psycopg.connect(db_url, autocommit=True) as admin:
            for role, eng in made:
                eng.dispose()
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (role,),
                )
                admin.execute(f'DROP OWNED BY "{role}"')
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def _notify_handler(calls: Counter[str]) -> Callable[[dict[str, Any], RowContext], None]:
    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        def send(key: str) -> str:
            calls[key] += 1
            return "sent"

        ctx.once(f"notify-{row['id']}", send)  # idempotent: the ledger's side connection

    return handle


@pytest.mark.parametrize("limit", [1, 2])
def test_role_out_of_connections_stops_the_step_and_quarantines_nothing(
    engine: Engine, limited_role: Callable[[int], Engine], limit: int
) -> None:
    """The issue's reproduction: a role with CONNECTION LIMIT 2 (and 1), rows whose
    ctx.once needs the step's second connection (the autocommit one for effect intents).

    The step holds two connections (execution/side_connection.py). With a limit of 1 the
    second cannot open: the step must stop with E-3010, nothing recorded. With 2 it may fit
    (6f8b081 needed three and quarantined both rows E-4004); then the rows simply succeed.
    Either way no row is quarantined or failed, and the rerun runs each effect once.
    """
    limited = limited_role(limit)
    root = f"lim-{uuid.uuid4().hex[:8]}"
    rows = [{"id": 1}, {"id": 2}]
    calls: Counter[str] = Counter()
    stopped: OrbitError | None = None
    try:
        with _executor(limited, root, "run-1") as ex:
            ex.run(rows, key="id", handler=_notify_handler(calls))
    except OrbitError as error:
        stopped = error
    ledger = _ledger(engine, root)
    assert [v for v in ledger.values() if v[0] != "done"] == [], ledger
    if limit == 1:
        assert stopped is not None, "a step that cannot open its second connection went on"
    if stopped is not None:
        assert stopped.code == INFRA, str(stopped)
        assert is_retryable(INFRA)
        assert ledger == {} and sum(calls.values()) == 0
    else:
        assert sorted(ledger) == ["1", "2"]

    # The recovery, with connections to spare: both rows done, each effect exactly once.
    with _executor(engine, root, "run-2") as ex:
        summary = ex.run(rows, key="id", handler=_notify_handler(calls))
    assert summary.quarantined == 0 and summary.done + summary.skipped_already_done == 2
    assert calls == {f"{root}/step/notify-1": 1, f"{root}/step/notify-2": 1}


def test_connections_exhausted_mid_step_never_quarantine_a_row(
    engine: Engine, limited_role: Callable[[int], Engine]
) -> None:
    """Whatever the executor holds, the handler takes every slot left before ctx.once.

    Robust to how many connections the executor keeps: if ctx.once needs a new one it must
    stop the step with E-3010; if it has one already the rows simply succeed. A quarantined
    or failed row is wrong either way.
    """
    limited = limited_role(4)
    url = limited.url.set(drivername="postgresql").render_as_string(hide_password=False)
    root = f"lim-{uuid.uuid4().hex[:8]}"
    rows = [{"id": i} for i in range(4)]
    calls: Counter[str] = Counter()
    blockers: list[psycopg.Connection] = []
    notify = _notify_handler(calls)

    def hog_then_notify(row: dict[str, Any], ctx: RowContext) -> None:
        if row["id"] == 0 and not blockers:
            while True:  # take every connection the role has left
                try:
                    blockers.append(psycopg.connect(url, connect_timeout=5))
                except psycopg.OperationalError:
                    break
        notify(row, ctx)

    stopped: OrbitError | None = None
    try:
        with _executor(limited, root, "run-1", batch_size=2) as ex:
            ex.run(rows, key="id", handler=hog_then_notify)
    except OrbitError as error:
        stopped = error
    finally:
        for conn in blockers:
            conn.close()
    ledger = _ledger(engine, root)
    assert not [k for k, (status, _) in ledger.items() if status != "done"], ledger
    if stopped is not None:
        assert stopped.code == INFRA, str(stopped)
    with _executor(engine, root, "run-2") as ex:
        ex.run(rows, key="id", handler=notify)
    assert {k: v for k, v in _ledger(engine, root).items()} == {
        str(i): ("done", None) for i in range(4)
    }
    assert sorted(calls.values()) == [1, 1, 1, 1], calls


def _faults() -> list[Any]:
    def wrapped() -> BaseException:
        return sa_exc.OperationalError(
            "SELECT 1", {}, psycopg.OperationalError("server closed the connection unexpectedly")
        )

    return [
        pytest.param(
            lambda: psycopg.errors.AdminShutdown(
                "terminating connection due to administrator command"
            ),
            id="AdminShutdown",
        ),
        pytest.param(
            lambda: psycopg.OperationalError("sorry, too many clients already"),
            id="too-many-clients",
        ),
        pytest.param(
            lambda: psycopg.errors.TooManyConnections("sorry, too many clients already"),
            id="TooManyConnections",
        ),
        pytest.param(
            lambda: psycopg.errors.SerializationFailure("could not serialize access"),
            id="SerializationFailure",
        ),
        pytest.param(lambda: psycopg.errors.DeadlockDetected("deadlock detected"), id="Deadlock"),
        pytest.param(lambda: psycopg.errors.DiskFull("could not extend file"), id="DiskFull"),
        pytest.param(
            lambda: psycopg.errors.ReadOnlySqlTransaction(
                "cannot execute INSERT in a read-only transaction"
            ),
            id="ReadOnly",
        ),
        pytest.param(
            lambda: psycopg.InterfaceError("the connection is closed"), id="InterfaceError"
        ),
        pytest.param(wrapped, id="sqlalchemy-wrapped"),
    ]


@pytest.mark.parametrize("on_error", ["quarantine", "fail_fast"])
@pytest.mark.parametrize("fault", _faults())
def test_handler_raising_an_infrastructure_error_stops_the_step_and_records_nothing(
    engine: Engine, fault: Callable[[], BaseException], on_error: OnError
) -> None:
    root = f"infra-{uuid.uuid4().hex[:8]}"
    rows = [{"id": i} for i in range(3)]
    handled: list[int] = []

    def handler(raise_on: int | None) -> Callable[[dict[str, Any], RowContext], None]:
        def handle(row: dict[str, Any], ctx: RowContext) -> None:
            handled.append(row["id"])
            if row["id"] == raise_on:
                raise fault()

        return handle

    with (
        pytest.raises(OrbitError) as raised,
        _executor(engine, root, "run-1", on_error=on_error) as ex,
    ):
        ex.run(rows, key="id", handler=handler(1))
    assert raised.value.code == INFRA, str(raised.value)
    assert _ledger(engine, root) == {"0": ("done", None)}, "row 1 must not be recorded"
    # The contract names errors.is_infrastructure; the classifier lives in store/faults.py.
    assert is_infrastructure(fault()) is True
    assert is_infrastructure(ValueError("bad amount")) is False

    handled.clear()
    with _executor(engine, root, "run-2", on_error=on_error) as ex:
        summary = ex.run(rows, key="id", handler=handler(None))
    assert handled == [1, 2] and summary.skipped_already_done == 1


@pytest.mark.parametrize(
    ("kill_row", "when"),
    [(2, "before"), (4, "after")],
    ids=["mid-batch-before-an-effect", "last-row-so-the-commit-meets-it"],
)
def test_backend_terminated_under_the_batch_stops_the_step_and_a_rerun_delivers_once(
    engine: Engine, db_url: str, kill_row: int, when: str
) -> None:
    """A real server fault: the executor's own backends are killed mid-batch (the next
    effect meets it) or after the batch's last row (the commit meets it)."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE public.tx_receiver (row_id int)"))  # no unique: count
    root = f"term-{uuid.uuid4().hex[:8]}"
    rows = [{"id": i} for i in range(5)]
    killed = False

    def handler(kill: bool) -> Callable[[dict[str, Any], RowContext], None]:
        def handle(row: dict[str, Any], ctx: RowContext) -> None:
            nonlocal killed

            def terminate() -> None:
                with psycopg.connect(db_url, autocommit=True, application_name="killer") as admin:
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND application_name = 'orbit_pipelines'"
                    )

            def deliver(conn: psycopg.Connection) -> None:
                conn.execute("INSERT INTO public.tx_receiver VALUES (%s)", (row["id"],))

            if kill and row["id"] == kill_row and not killed and when == "before":
                killed = True
                terminate()
            ctx.once(f"tx-{row['id']}", deliver, receiver="transactional")
            if kill and row["id"] == kill_row and not killed and when == "after":
                killed = True
                terminate()

        return handle

    with pytest.raises(OrbitError) as raised, _executor(engine, root, "run-1", batch_size=5) as ex:
        ex.run(rows, key="id", handler=handler(True))
    assert raised.value.code == INFRA, str(raised.value)
    assert all(status == "done" for status, _ in _ledger(engine, root).values())

    engine.dispose()  # the pool's connections were terminated too
    with _executor(engine, root, "run-2", batch_size=5) as ex:
        ex.run(rows, key="id", handler=handler(False))
    with engine.connect() as conn:
        delivered = dict(
            conn.execute(text("SELECT row_id, count(*) FROM public.tx_receiver GROUP BY 1")).all()
        )
    assert delivered == dict.fromkeys(range(5), 1)
    assert _ledger(engine, root) == {str(i): ("done", None) for i in range(5)}


def test_batch_sink_raising_an_infrastructure_error_records_no_row(engine: Engine) -> None:
    # run_batches marks the batch's rows failed with E-4004 when the sink meets a database
    # that is out of connections: item 1's rule (never the rows' fault) is not applied there.
    from orbit_pipelines.execution.batch_runner import run_batches

    root = f"sink-{uuid.uuid4().hex[:8]}"

    def sink(rows: list[Any], info: Any) -> None:
        raise psycopg.OperationalError("sorry, too many clients already")

    with pytest.raises(OrbitError) as raised, _executor(engine, root, "run-1", batch_size=10) as ex:
        run_batches(ex, [{"id": "a"}, {"id": "b"}], key="id", sink=sink)
    assert raised.value.code == INFRA, str(raised.value)
    assert _ledger(engine, root) == {}


def test_slow_rows_after_a_transactional_effect_do_not_livelock_the_step(engine: Engine) -> None:
    # A transactional effect opens the batch transaction; the rows after it in the batch run
    # slow work that issues no statement on the batch connection (a computation, a read).
    # The fencing backstop (idle_in_transaction_session_timeout) then ends the session, the
    # step stops E-3010 (retryable) and the rerun meets the same timeout: it never finishes.

    root = f"slow-{uuid.uuid4().hex[:8]}"

    def handle(row: dict[str, Any], ctx: RowContext) -> None:
        if row["id"] == 0:
            ctx.once("tx-0", lambda conn: None, receiver="transactional")
        else:
            time.sleep(0.4)  # slow, and nothing to do with the database

    options = ExecutorOptions(
        batch_size=10, on_error="quarantine", heartbeat_every_s=0.5, idle_in_transaction_timeout_s=1
    )
    outcomes = []
    for attempt in range(3):
        try:
            with RowExecutor(engine, RunScope(root, f"run-{attempt}", "step"), options) as ex:
                summary = ex.run([{"id": i} for i in range(6)], key="id", handler=handle)
            outcomes.append(("done", summary.done))
            break
        except OrbitError as error:
            outcomes.append((error.code, 0))
    assert outcomes[-1][0] == "done", f"attempts: {outcomes}"
