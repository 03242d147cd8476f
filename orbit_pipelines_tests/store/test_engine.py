"""Connecting: transient errors are retried, permanent ones fail at once with a clear line."""

from __future__ import annotations

import socket
import time

import pytest

from orbit_pipelines.errors import OrbitError
from orbit_pipelines.store.engine import check_connection, create_store_engine
from orbit_pipelines_tests.postgres import with_database


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_connection_is_retried_then_named(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    engine = create_store_engine(f"postgresql://etl:s3cr3t@127.0.0.1:{port}/orbit")
    started = time.monotonic()
    with pytest.raises(OrbitError) as info:
        check_connection(engine, budget_s=1.0)
    # Refused is transient (a restarting server refuses too), so the budget was used.
    assert time.monotonic() - started >= 0.9
    assert info.value.code == "E-2001"
    assert f"127.0.0.1:{port}/orbit" in info.value.message
    assert "s3cr3t" not in info.value.render()


def test_unknown_host_fails_at_once() -> None:
    engine = create_store_engine("postgresql://etl:s3cr3t@no-such-host.invalid:5432/orbit")
    started = time.monotonic()
    with pytest.raises(OrbitError) as info:
        check_connection(engine, budget_s=30.0)
    assert time.monotonic() - started < 15  # not retried for the whole 30 s budget
    assert info.value.code == "E-2001"
    assert "no-such-host.invalid" in info.value.message
    assert "s3cr3t" not in info.value.render()


def test_missing_database_is_its_own_error(pg_admin_url: str) -> None:
    engine = create_store_engine(with_database(pg_admin_url, "orbit_no_such_db"))
    with pytest.raises(OrbitError) as info:
        check_connection(engine, budget_s=5.0)
    assert info.value.code == "E-2003"
    assert "orbit_no_such_db" in info.value.message


def test_a_reachable_database_connects(db_url: str) -> None:
    engine = create_store_engine(db_url)
    check_connection(engine, budget_s=1.0)
    engine.dispose()
