"""The local carrier inside the process that uses it: what the example jobs talk to when no
carrier is configured (``ORBIT_CARRIER_URL`` unset), so they run under ``orbit dev`` with
no set-up.

Why in-process and not one service that ``orbit dev`` starts: everything the carrier knows
(shipments, idempotency keys, requests, faults) lives in Postgres (``carrier.*`` tables of
the orbit database), so one server per step process on the same database is the same
carrier as far as any pipeline can tell: a request repeated with the same idempotency key
after a crash, from another process, gets the shipment the first one made. Nothing to
start, wire or stop, and the product (``orbit dev``) knows nothing about the examples.
"""

from __future__ import annotations

import secrets
import threading

from orbit_examples.carrier import storage
from orbit_examples.carrier.server import CarrierServer
from orbit_pipelines import OrbitStore


class LocalCarrier:
    """A carrier server on 127.0.0.1 (a free port) in a daemon thread of this process."""

    def __init__(self, postgres_url: str) -> None:
        # The store resource outside a run, as ``python -m orbit_examples.carrier`` uses it.
        self._store = OrbitStore(postgres_url=postgres_url)
        engine = self._store.engine
        storage.create_tables(engine)
        self.token = secrets.token_urlsafe(16)
        self._server = CarrierServer(("127.0.0.1", 0), engine=engine, token=self.token)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="local-carrier",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """Where it listens."""
        return f"http://127.0.0.1:{self._server.port}"

    def close(self) -> None:
        """Stop serving and release the port and connections."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._store.engine.dispose()
