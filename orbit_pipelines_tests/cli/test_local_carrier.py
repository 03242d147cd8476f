"""The local carrier the example jobs use when ORBIT_CARRIER_URL is unset (`orbit dev` with
no set-up): one server per step process, the same carrier, because its state is Postgres."""

from __future__ import annotations

from typing import Any

import pytest
from dagster import build_init_resource_context

from orbit_examples.carrier.resource import CarrierResource, carrier_from_env


def _live(resource: CarrierResource) -> CarrierResource:
    return resource.with_replaced_resource_context(
        build_init_resource_context()
    ).process_config_and_initialize()


def test_two_local_carriers_on_one_database_are_one_carrier(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORBIT_CARRIER_URL", raising=False)
    monkeypatch.setenv("ORBIT_POSTGRES_URL", db_url)
    first, second = _live(carrier_from_env()), _live(carrier_from_env())
    assert first.is_local and second.is_local
    order: dict[str, Any] = {
        "order_id": "o-1",
        "address": "1 Main St",
        "items": [{"sku": "A", "qty": 1}],
    }
    try:
        made = first.client().create_shipment(**order, idempotency_key="o-1")
        # Another step process (a recovery after a crash) repeats the request: same shipment.
        again = second.client().create_shipment(**order, idempotency_key="o-1")
        assert first.client().base_url != second.client().base_url  # two servers
        assert (again.shipment_id, again.replayed) == (made.shipment_id, True)
        assert len(second.client().shipments("o-1")) == 1
    finally:
        first.close_local()
        second.close_local()


def test_a_configured_carrier_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORBIT_CARRIER_URL", "http://carrier.example:8080")
    monkeypatch.setenv("ORBIT_CARRIER_TOKEN", "t0ken")
    live = _live(carrier_from_env())
    assert not live.is_local
    assert live.client().base_url == "http://carrier.example:8080"
    assert "t0ken" not in repr(live)
