"""The carrier as a Dagster resource: base URL and token are config (give both via ``EnvVar``).

Pointing the pipelines at a real carrier is a config change: set ``ORBIT_CARRIER_URL`` and
``ORBIT_CARRIER_TOKEN``. The token is a secret: ``EnvVar`` keeps it out of run config and the
UI, and neither this resource nor its client ever puts it in a log line or an error.
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from orbit_examples.carrier.client import DEFAULT_TIMEOUT_S, CarrierClient

CARRIER_URL_ENV = "ORBIT_CARRIER_URL"
CARRIER_TOKEN_ENV = "ORBIT_CARRIER_TOKEN"


class CarrierResource(ConfigurableResource):
    """A parcel carrier's shipment API."""

    base_url: str = Field(description="Base URL, e.g. http://127.0.0.1:PORT for the local one.")
    token: str = Field(description="Bearer token (a secret: use EnvVar).", repr=False)
    timeout_s: float = Field(
        default=DEFAULT_TIMEOUT_S, description="Seconds to wait for one answer before E-3001."
    )

    def client(self) -> CarrierClient:
        """A client for this carrier."""
        return CarrierClient(self.base_url, self.token, timeout_s=self.timeout_s)
