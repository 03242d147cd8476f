"""The local carrier as a real process on real Postgres: idempotency, faults, auth."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from orbit_examples.carrier import storage
from orbit_examples.carrier.client import CarrierClient, CarrierError
from orbit_pipelines.errors import OrbitError
from orbit_pipelines_tests.carrier.running import TOKEN, RunningCarrier, start_carrier
from orbit_pipelines_tests.processes import ChildProcesses

ITEMS = [{"sku": "A-100", "quantity": 2, "unit_price": "9.99"}]


def count(engine: Engine, table: object, **where: str) -> int:
    query = select(func.count()).select_from(table)  # type: ignore[arg-type]
    for name, value in where.items():
        query = query.where(table.c[name] == value)  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_same_idempotency_key_twice_gives_one_shipment_and_two_recorded_requests(
    carrier: RunningCarrier, engine: Engine
) -> None:
    client = carrier.client()
    first = client.create_shipment(
        order_id="O-1", address="1 Main St", items=ITEMS, idempotency_key="ship:O-1"
    )
    second = client.create_shipment(
        order_id="O-1", address="1 Main St", items=ITEMS, idempotency_key="ship:O-1"
    )

    assert (first.replayed, second.replayed) == (False, True)
    assert second.shipment_id == first.shipment_id
    assert second.tracking_number == first.tracking_number
    assert first.tracking_number.startswith("1Z") and len(first.tracking_number) == 18
    assert count(engine, storage.shipments, order_id="O-1") == 1
    assert count(engine, storage.requests, order_id="O-1") == 2
    outcomes = [r["outcome"] for r in client.requests("O-1")]
    assert outcomes == ["created", "replayed"]
    [listed] = client.shipments("O-1")
    assert listed["shipment_id"] == first.shipment_id and listed["items"] == ITEMS

    # A different key for the same order is a different shipment: the key, not the order,
    # is what the carrier deduplicates on.
    other = client.create_shipment(
        order_id="O-1", address="1 Main St", items=ITEMS, idempotency_key="ship:O-1:again"
    )
    assert other.shipment_id != first.shipment_id


def test_concurrent_requests_with_one_key_create_one_shipment(
    carrier: RunningCarrier, engine: Engine
) -> None:
    client = carrier.client()

    def create(_: int) -> str:
        return client.create_shipment(
            order_id="O-7", address="7 Main St", items=ITEMS, idempotency_key="race"
        ).shipment_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        shipment_ids = set(pool.map(create, range(16)))

    assert len(shipment_ids) == 1
    assert count(engine, storage.shipments) == 1
    assert count(engine, storage.requests, idempotency_key="race") == 16


def test_key_reused_for_another_order_is_refused(carrier: RunningCarrier, engine: Engine) -> None:
    client = carrier.client()
    client.create_shipment(order_id="O-1", address="1 Main", items=ITEMS, idempotency_key="k")
    with pytest.raises(CarrierError) as caught:
        client.create_shipment(order_id="O-2", address="2 Main", items=ITEMS, idempotency_key="k")
    assert (caught.value.code, caught.value.status, caught.value.retryable) == (
        "E-3005",
        409,
        False,
    )
    assert count(engine, storage.shipments) == 1


def test_rate_limit_fault_is_retryable_e3002_then_succeeds(
    carrier: RunningCarrier, engine: Engine
) -> None:
    client = carrier.client()
    client.inject_fault("O-2", "429", times=2)
    for _ in range(2):
        with pytest.raises(CarrierError) as caught:
            client.create_shipment(
                order_id="O-2", address="2 Main", items=ITEMS, idempotency_key="ship:O-2"
            )
        assert (caught.value.code, caught.value.retryable) == ("E-3002", True)
        assert caught.value.retry_after_s == 1.0
    assert count(engine, storage.shipments) == 0

    created = client.create_shipment(
        order_id="O-2", address="2 Main", items=ITEMS, idempotency_key="ship:O-2"
    )
    assert not created.replayed
    assert [r["outcome"] for r in client.requests("O-2")] == [
        "admin:fault:429",
        "fault:429",
        "fault:429",
        "created",
    ]


def test_address_error_fault_is_e3003_and_not_retryable(
    carrier: RunningCarrier, engine: Engine
) -> None:
    client = carrier.client()
    client.inject_fault("O-3", "address_error", times=1)
    with pytest.raises(CarrierError) as caught:
        client.create_shipment(
            order_id="O-3", address="3 Main", items=ITEMS, idempotency_key="ship:O-3"
        )
    assert (caught.value.code, caught.value.status, caught.value.retryable) == (
        "E-3003",
        422,
        False,
    )
    assert count(engine, storage.shipments) == 0
    # A blank address is refused the same way, no fault needed.
    with pytest.raises(CarrierError) as blank:
        client.create_shipment(order_id="O-4", address="  ", items=ITEMS, idempotency_key="b")
    assert blank.value.code == "E-3003"


def test_timeout_fault_creates_the_shipment_and_a_retry_with_the_key_gets_the_same_one(
    carrier: RunningCarrier, engine: Engine
) -> None:
    client = carrier.client(timeout_s=0.5)
    client.inject_fault("O-5", "timeout", times=1, delay_s=2.0)
    with pytest.raises(CarrierError) as caught:
        client.create_shipment(
            order_id="O-5", address="5 Main", items=ITEMS, idempotency_key="ship:O-5"
        )
    assert (caught.value.code, caught.value.status, caught.value.retryable) == (
        "E-3001",
        None,
        True,
    )
    # The carrier did the work; only the answer was lost. That is the in-doubt case.
    assert count(engine, storage.shipments, order_id="O-5") == 1

    retried = client.create_shipment(
        order_id="O-5", address="5 Main", items=ITEMS, idempotency_key="ship:O-5"
    )
    assert retried.replayed
    assert count(engine, storage.shipments, order_id="O-5") == 1


def test_auth_is_required_and_refusals_are_recorded(
    carrier: RunningCarrier, engine: Engine
) -> None:
    with pytest.raises(CarrierError) as caught:
        carrier.client(token="wrong-token").create_shipment(
            order_id="O-6", address="6 Main", items=ITEMS, idempotency_key="ship:O-6"
        )
    assert (caught.value.code, caught.value.status) == ("E-5001", 401)
    # The token we hold must never appear in what a person reads.
    assert TOKEN not in str(caught.value) and "wrong-token" not in str(caught.value)
    # A blank token is a configuration error caught before any request is sent.
    with pytest.raises(OrbitError) as blank:
        carrier.client(token=" ")
    assert blank.value.code == "E-2008"
    with pytest.raises(CarrierError):
        carrier.client(token="nope").inject_fault("O-6", "429")
    with pytest.raises(CarrierError):
        carrier.client(token="nope").shipments()

    assert count(engine, storage.shipments) == 0
    assert count(engine, storage.faults) == 0
    assert count(engine, storage.requests, outcome="rejected:unauthorized") == 3


def test_missing_idempotency_key_is_a_400(carrier: RunningCarrier, engine: Engine) -> None:
    request = urllib.request.Request(
        carrier.url + "/shipments",
        data=json.dumps({"order_id": "O-8", "address": "8 Main", "items": ITEMS}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["error"] == "missing_idempotency_key"
    assert count(engine, storage.shipments) == 0


def test_unreachable_carrier_is_e3004() -> None:
    # Port 9 (discard) on loopback: nothing listens there in a test environment.
    with pytest.raises(CarrierError) as caught:
        CarrierClient("http://127.0.0.1:9", TOKEN, timeout_s=2).shipments()
    assert (caught.value.code, caught.value.retryable) == ("E-3004", True)


def test_sigterm_stops_the_carrier_cleanly_and_data_survives_a_restart(
    children: ChildProcesses, db_url: str, tmp_path: Path, engine: Engine
) -> None:
    first = start_carrier(children, db_url, tmp_path / "a")
    created = first.client().create_shipment(
        order_id="O-9", address="9 Main", items=ITEMS, idempotency_key="ship:O-9"
    )
    proc = first.proc
    assert isinstance(proc, subprocess.Popen)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert TOKEN not in first.log.read_text()

    second = start_carrier(children, db_url, tmp_path / "b")
    again = second.client().create_shipment(
        order_id="O-9", address="9 Main", items=ITEMS, idempotency_key="ship:O-9"
    )
    assert again.shipment_id == created.shipment_id and again.replayed
