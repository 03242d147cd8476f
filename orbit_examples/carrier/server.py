"""The local carrier: a small HTTP service that creates shipments, for demos and tests.

It behaves like a real parcel carrier's API where that matters to a pipeline:

- ``POST /shipments`` needs ``Authorization: Bearer <token>`` (401 otherwise) and an
  ``Idempotency-Key`` header (400 otherwise). The first request with a key creates a shipment
  (201); any later request with the same key returns that same shipment (200) and never
  creates a second one. The same key with a different order is refused (409).
- Every request received is recorded in ``carrier.requests``; every shipment in
  ``carrier.shipments``. Both live in Postgres so a test can count them after the fact.
- ``POST /admin/faults`` makes the next ``times`` requests for an order misbehave:
  ``timeout`` (the shipment IS created, the answer comes too late — the in-doubt case an
  idempotency key exists for), ``429`` (nothing created, ``Retry-After: 1``) or
  ``address_error`` (422, nothing created).

Standard library HTTP server only: no new dependency for a test double.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Engine

from orbit_examples.carrier import storage

log = logging.getLogger("orbit_examples.carrier")

MAX_BODY_BYTES = 1 << 20
DEFAULT_TIMEOUT_DELAY_S = 5.0


class CarrierServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its token and its database."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        engine: Engine,
        token: str,
        timeout_delay_s: float = DEFAULT_TIMEOUT_DELAY_S,
    ) -> None:
        super().__init__(address, CarrierHandler)
        self.engine = engine
        self.token = token
        self.timeout_delay_s = timeout_delay_s

    @property
    def port(self) -> int:
        """The port actually bound (useful after binding port 0)."""
        return int(self.server_address[1])


class _Rejected(Exception):
    """A request we answer with an error status; carries what to record."""

    def __init__(self, status: HTTPStatus, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


class CarrierHandler(BaseHTTPRequestHandler):
    """Routes the carrier API. One instance per request."""

    server: CarrierServer
    protocol_version = "HTTP/1.1"

    # --- routing -----------------------------------------------------------------------

    def do_GET(self) -> None:
        """``GET /health``, ``GET /shipments?order_id=``, ``GET /requests?order_id=``."""
        url = urlsplit(self.path)
        if url.path == "/health":
            self._send(HTTPStatus.OK, {"status": "ok"})
            return
        order_id = parse_qs(url.query).get("order_id", [None])[0]
        try:
            self._authorize()
        except _Rejected as rejected:
            self._reject(rejected, order_id=order_id)
            return
        if url.path == "/shipments":
            found = storage.shipments_for_order(self.server.engine, order_id)
            self._send(HTTPStatus.OK, {"shipments": [s.as_json() for s in found]})
        elif url.path == "/requests":
            recorded = storage.requests_for_order(self.server.engine, order_id)
            self._send(HTTPStatus.OK, {"requests": recorded})
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": "not_found", "message": url.path})

    def do_POST(self) -> None:
        """``POST /shipments`` and ``POST /admin/faults``."""
        path = urlsplit(self.path).path
        if path == "/shipments":
            self._create_shipment()
        elif path == "/admin/faults":
            self._set_fault()
        else:
            self._drain_body()
            self._send(HTTPStatus.NOT_FOUND, {"error": "not_found", "message": path})

    # --- endpoints ---------------------------------------------------------------------

    def _create_shipment(self) -> None:
        key = self.headers.get("Idempotency-Key")
        order_id: str | None = None
        try:
            body = self._read_json()
            order_id = _optional_text(body, "order_id")
            self._authorize()
            order_id = _text_field(body, "order_id")
            if not key:
                raise _Rejected(
                    HTTPStatus.BAD_REQUEST, "missing_idempotency_key", "Idempotency-Key is required"
                )
            address = _text_field(body, "address")
            items = body.get("items")
            if not isinstance(items, list) or not items:
                raise _Rejected(
                    HTTPStatus.BAD_REQUEST, "invalid_items", "items must be a non-empty list"
                )
        except _Rejected as rejected:
            self._reject(rejected, order_id=order_id, key=key)
            return

        fault = storage.take_fault(self.server.engine, order_id)
        if fault is not None and fault.fault == "429":
            self._record(HTTPStatus.TOO_MANY_REQUESTS, "fault:429", order_id, key)
            self._send(
                HTTPStatus.TOO_MANY_REQUESTS,
                {"error": "rate_limited", "message": "slow down"},
                headers={"Retry-After": "1"},
            )
            return
        if (fault is not None and fault.fault == "address_error") or not address.strip():
            outcome = "fault:address_error" if fault is not None else "rejected:address"
            self._record(HTTPStatus.UNPROCESSABLE_ENTITY, outcome, order_id, key)
            self._send(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                {"error": "address_rejected", "message": f"cannot deliver to {address!r}"},
            )
            return

        shipment, created = storage.create_or_get_shipment(
            self.server.engine, idempotency_key=key, order_id=order_id, address=address, items=items
        )
        if shipment.order_id != order_id:
            self._record(HTTPStatus.CONFLICT, "rejected:key_reused", order_id, key)
            self._send(
                HTTPStatus.CONFLICT,
                {
                    "error": "idempotency_key_reused",
                    "message": "this Idempotency-Key was used for another order",
                },
            )
            return
        status = HTTPStatus.CREATED if created else HTTPStatus.OK
        outcome = "created" if created else "replayed"
        if fault is not None and fault.fault == "timeout":
            outcome = f"{outcome}+fault:timeout"
        self._record(status, outcome, order_id, key, shipment.shipment_id)
        if fault is not None and fault.fault == "timeout":
            # The shipment exists; the caller just never hears about it in time.
            time.sleep(fault.delay_s if fault.delay_s is not None else self.server.timeout_delay_s)
        payload = {"shipment_id": shipment.shipment_id, "tracking_number": shipment.tracking_number}
        self._send(status, payload)

    def _set_fault(self) -> None:
        order_id: str | None = None
        try:
            body = self._read_json()
            order_id = _optional_text(body, "order_id")
            self._authorize()
            order_id = _text_field(body, "order_id")
            fault = body.get("fault")
            times = body.get("times", 1)
            delay_s = body.get("delay_s")
            if fault not in storage.FAULT_KINDS:
                raise _Rejected(
                    HTTPStatus.BAD_REQUEST,
                    "invalid_fault",
                    f"fault must be one of {', '.join(storage.FAULT_KINDS)}",
                )
            if not isinstance(times, int) or times < 0:
                raise _Rejected(HTTPStatus.BAD_REQUEST, "invalid_times", "times must be >= 0")
            if delay_s is not None and (not isinstance(delay_s, int | float) or delay_s < 0):
                raise _Rejected(HTTPStatus.BAD_REQUEST, "invalid_delay", "delay_s must be >= 0")
        except _Rejected as rejected:
            self._reject(rejected, order_id=order_id)
            return
        storage.set_fault(
            self.server.engine,
            order_id=order_id,
            fault=str(fault),
            times=times,
            delay_s=None if delay_s is None else float(delay_s),
        )
        self._record(HTTPStatus.OK, f"admin:fault:{fault}", order_id, None)
        self._send(HTTPStatus.OK, {"order_id": order_id, "fault": fault, "times": times})

    # --- helpers -----------------------------------------------------------------------

    def _authorize(self) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        # compare_digest: the answer time must not tell an attacker how much of a token matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), self.server.token.encode()
        ):
            raise _Rejected(
                HTTPStatus.UNAUTHORIZED, "unauthorized", "missing or wrong bearer token"
            )

    def _drain_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise _Rejected(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large", "body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _read_json(self) -> dict[str, Any]:
        raw = self._drain_body()
        try:
            body = json.loads(raw or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _Rejected(HTTPStatus.BAD_REQUEST, "invalid_json", str(error)) from None
        if not isinstance(body, dict):
            raise _Rejected(HTTPStatus.BAD_REQUEST, "invalid_json", "body must be an object")
        return body

    def _reject(
        self, rejected: _Rejected, *, order_id: str | None = None, key: str | None = None
    ) -> None:
        self._record(rejected.status, f"rejected:{rejected.error}", order_id, key)
        self._send(rejected.status, {"error": rejected.error, "message": rejected.message})

    def _record(
        self,
        status: HTTPStatus,
        outcome: str,
        order_id: str | None,
        key: str | None,
        shipment_id: str | None = None,
    ) -> None:
        storage.record_request(
            self.server.engine,
            method=self.command,
            path=urlsplit(self.path).path,
            status=int(status),
            outcome=outcome,
            order_id=order_id,
            idempotency_key=key,
            shipment_id=shipment_id,
        )

    def _send(
        self, status: HTTPStatus, payload: dict[str, Any], *, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload, default=str).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout): expected with the timeout fault.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines go to our logger; headers (the token) are never logged."""
        log.info("%s %s", self.address_string(), format % args)


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) else None


def _text_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or (name == "order_id" and not value):
        raise _Rejected(HTTPStatus.BAD_REQUEST, f"invalid_{name}", f"{name} must be a string")
    return value
