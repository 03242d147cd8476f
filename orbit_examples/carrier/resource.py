"""The carrier as a Dagster resource: a real carrier's base URL and token, or the local one.

Pointing the pipelines at a real carrier is a config change: set ``ORBIT_CARRIER_URL`` and
``ORBIT_CARRIER_TOKEN`` where the steps run (or give ``base_url``/``token``, as ``EnvVar``).
With no URL at all the example jobs use the local carrier, started in each step's own
process on the orbit database (see ``local``), so they run under ``orbit dev`` with no
set-up. The choice is made when a step asks for a client, from that process's environment,
never when the code location is imported (a process that imported it earlier must not keep
a stale answer). The token is a secret: it never goes into run config, the UI, a log line
or an error.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from orbit_examples.carrier.client import DEFAULT_TIMEOUT_S, CarrierClient
from orbit_pipelines import OrbitError
from orbit_pipelines.errors import E2008_BAD_CONFIG

CARRIER_URL_ENV = "ORBIT_CARRIER_URL"
CARRIER_TOKEN_ENV = "ORBIT_CARRIER_TOKEN"
POSTGRES_URL_ENV = "ORBIT_POSTGRES_URL"
log = logging.getLogger("orbit_examples.carrier")
# base_url meaning "start the local carrier in this process".
LOCAL = "local"


class CarrierResource(ConfigurableResource):
    """A parcel carrier's shipment API."""

    base_url: str | None = Field(
        default=None,
        description="Base URL of the carrier, e.g. https://carrier.example; unset: "
        "$ORBIT_CARRIER_URL, and without it (or with 'local') the local carrier, started in "
        "the step's own process on the orbit database.",
    )
    token: str | None = Field(
        default=None,
        description="Bearer token (a secret: use EnvVar); unset: $ORBIT_CARRIER_TOKEN. "
        "Not used by the local carrier.",
        repr=False,
    )
    timeout_s: float = Field(
        default=DEFAULT_TIMEOUT_S, description="Seconds to wait for one answer before E-3001."
    )
    postgres_url: str | None = Field(
        default=None,
        description="The local carrier only: the database it keeps shipments in "
        "(unset: $ORBIT_POSTGRES_URL).",
        repr=False,
    )
    _local: Any = PrivateAttr(default=None)

    def target(self) -> str:
        """The carrier's base URL, or 'local'."""
        return self.base_url or os.environ.get(CARRIER_URL_ENV) or LOCAL

    @property
    def is_local(self) -> bool:
        """True when the steps talk to the in-process local carrier."""
        return self.target() == LOCAL

    def client(self) -> CarrierClient:
        """A client for this carrier (the local one is started on first use, in this process).

        Raises E-2008 naming the variable when a real carrier has no token."""
        if self.is_local:
            local = self._start_local()
            return CarrierClient(local.url, local.token, timeout_s=self.timeout_s)
        token = self.token if self.token is not None else os.environ.get(CARRIER_TOKEN_ENV)
        if token is None:
            raise OrbitError(
                E2008_BAD_CONFIG,
                f"environment variable {CARRIER_TOKEN_ENV} is not set (the carrier at "
                f"{self.target()} needs its bearer token)",
                hint=f"set {CARRIER_TOKEN_ENV}, or unset {CARRIER_URL_ENV} for the local carrier",
            )
        return CarrierClient(self.target(), token, timeout_s=self.timeout_s)

    def _start_local(self) -> Any:
        # Started lazily and never torn down by Dagster: a resource with teardown cannot be
        # initialized directly (Dagster wants a context manager then), and the server thread
        # is a daemon that ends with the step's process anyway.
        if self._local is None:
            from orbit_examples.carrier.local import LocalCarrier

            url = self.postgres_url or os.environ.get(POSTGRES_URL_ENV)
            if not url:
                raise OrbitError(
                    E2008_BAD_CONFIG,
                    f"environment variable {POSTGRES_URL_ENV} is not set (the local carrier "
                    "keeps its shipments in Postgres)",
                    hint=f"set {POSTGRES_URL_ENV}, or {CARRIER_URL_ENV} and "
                    f"{CARRIER_TOKEN_ENV} for a real carrier",
                )
            self._local = LocalCarrier(url)
            # Said, so that a worker that should talk to a real carrier but lacks the
            # variable is visible in its log, not only in the carrier's tables.
            log.warning(
                "using the local carrier at %s (no carrier URL: %s is unset); set %s and %s "
                "for a real one",
                self._local.url,
                CARRIER_URL_ENV,
                CARRIER_URL_ENV,
                CARRIER_TOKEN_ENV,
            )
        return self._local

    def close_local(self) -> None:
        """Stop the local carrier this resource started (tests; a step's process just ends)."""
        if self._local is not None:
            self._local.close()
            self._local = None


def carrier_from_env() -> CarrierResource:
    """The carrier the example code location binds: ``ORBIT_CARRIER_URL`` and
    ``ORBIT_CARRIER_TOKEN`` as they are where each step runs, else the local carrier."""
    return CarrierResource()
