"""The carrier resource takes its URL and token from config and never shows the token."""

from __future__ import annotations

import pytest
from dagster import EnvVar, build_init_resource_context

from orbit_examples.carrier.resource import CarrierResource


def test_resource_builds_a_client_from_env_and_hides_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORBIT_CARRIER_URL", "http://127.0.0.1:1234/")
    monkeypatch.setenv("ORBIT_CARRIER_TOKEN", "very-secret-token")
    resource = CarrierResource(
        base_url=EnvVar("ORBIT_CARRIER_URL"), token=EnvVar("ORBIT_CARRIER_TOKEN"), timeout_s=3
    )
    live = resource.with_replaced_resource_context(
        build_init_resource_context()
    ).process_config_and_initialize()

    client = live.client()

    assert client.base_url == "http://127.0.0.1:1234"
    assert client.timeout_s == 3
    for shown in (repr(live), str(live), repr(client)):
        assert "very-secret-token" not in shown
