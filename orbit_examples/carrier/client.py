"""A small client for the carrier API, with timeouts, mapping failures to error codes.

=================================  ==========  =========
carrier answer                     code        retryable
=================================  ==========  =========
no answer within the timeout       E-3001      yes
429 Too Many Requests              E-3002      yes (``retry_after_s`` from ``Retry-After``)
422 address rejected               E-3003      no: fail fast, a retry cannot fix an address
5xx, connection refused / reset    E-3004      yes
400 / 404 / 409 (key reused)       E-3005      no
401                                E-5001      no
403                                E-5002      no
=================================  ==========  =========

Standard library only (``urllib``). The token goes in a header and is never part of an
error message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from orbit_examples.errors import E3003_ADDRESS_REJECTED
from orbit_pipelines.errors import (
    E2008_BAD_CONFIG,
    E3001_SERVICE_TIMEOUT,
    E3002_RATE_LIMITED,
    E3004_SERVICE_UNAVAILABLE,
    E3005_REQUEST_REFUSED,
    E5001_UNAUTHORIZED,
    E5002_FORBIDDEN,
    ErrorCode,
    OrbitError,
)

DEFAULT_TIMEOUT_S = 10.0


class CarrierError(OrbitError):
    """A carrier call that failed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(
        self,
        error: ErrorCode,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(error, message, hint=hint)
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        """Whether calling again (with the same idempotency key) may succeed."""
        return self.error.retryable


@dataclass(frozen=True)
class ShipmentCreated:
    """The carrier's answer to a create: ``replayed`` when the key had been seen before."""

    shipment_id: str
    tracking_number: str
    replayed: bool


def check_carrier_config(base_url: str, token: str, timeout_s: float) -> None:
    """Fail with E-2008 before the first call when the configuration cannot work.

    Names the setting (never the token's value): a job fails here, before any shipment.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = base_url if len(base_url) <= 80 else base_url[:77] + "..."
        raise OrbitError(
            E2008_BAD_CONFIG,
            f"carrier base URL {shown!r} is not an http(s) URL with a host",
            hint="set ORBIT_CARRIER_URL to e.g. http://127.0.0.1:8765",
        )
    if not token.strip():
        raise OrbitError(E2008_BAD_CONFIG, "carrier token is empty", hint="set ORBIT_CARRIER_TOKEN")
    if timeout_s <= 0:
        raise OrbitError(E2008_BAD_CONFIG, f"carrier timeout_s must be > 0, not {timeout_s}")


class CarrierClient:
    """Calls one carrier at ``base_url`` with a bearer ``token``."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        check_carrier_config(base_url, token, timeout_s)
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"CarrierClient({self.base_url!r}, token=***, timeout_s={self.timeout_s})"

    def create_shipment(
        self,
        *,
        order_id: str,
        address: str,
        items: list[dict[str, Any]],
        idempotency_key: str,
    ) -> ShipmentCreated:
        """Create (or, for a key seen before, fetch) the shipment for one order."""
        status, body = self._call(
            "POST",
            "/shipments",
            {"order_id": order_id, "address": address, "items": items},
            headers={"Idempotency-Key": idempotency_key},
            what=f"create shipment for order {order_id}",
        )
        return ShipmentCreated(
            shipment_id=str(body["shipment_id"]),
            tracking_number=str(body["tracking_number"]),
            replayed=status == 200,
        )

    def shipments(self, order_id: str | None = None) -> list[dict[str, Any]]:
        """Shipments the carrier holds (for one order, or all)."""
        query = f"?{urlencode({'order_id': order_id})}" if order_id is not None else ""
        _, body = self._call("GET", f"/shipments{query}", None, what="list shipments")
        return list(body["shipments"])

    def requests(self, order_id: str | None = None) -> list[dict[str, Any]]:
        """Requests the carrier recorded (for one order, or all)."""
        query = f"?{urlencode({'order_id': order_id})}" if order_id is not None else ""
        _, body = self._call("GET", f"/requests{query}", None, what="list requests")
        return list(body["requests"])

    def inject_fault(
        self, order_id: str, fault: str, *, times: int = 1, delay_s: float | None = None
    ) -> None:
        """Make the next ``times`` creates for ``order_id`` fail with ``fault``."""
        payload: dict[str, Any] = {"order_id": order_id, "fault": fault, "times": times}
        if delay_s is not None:
            payload["delay_s"] = delay_s
        self._call("POST", "/admin/faults", payload, what=f"inject {fault} for {order_id}")

    def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        *,
        what: str,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return int(response.status), _json(response.read())
        except urllib.error.HTTPError as error:
            raise _http_error(error, what, self.base_url) from None
        except TimeoutError as error:
            raise self._timeout(what) from error
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise self._timeout(what) from None
            raise CarrierError(
                E3004_SERVICE_UNAVAILABLE,
                f"{what}: cannot reach the carrier at {self.base_url}: {error.reason}",
                hint="is the carrier running and its base_url right?",
            ) from None
        except (ConnectionError, OSError) as error:
            raise CarrierError(
                E3004_SERVICE_UNAVAILABLE,
                f"{what}: connection to {self.base_url} failed: {error}",
            ) from None

    def _timeout(self, what: str) -> CarrierError:
        return CarrierError(
            E3001_SERVICE_TIMEOUT,
            f"{what}: no answer from {self.base_url} within {self.timeout_s:g}s",
            hint="the request may have been carried out; retrying with the same key is safe",
        )


def _json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"message": raw[:200].decode("utf-8", errors="replace")}
    return body if isinstance(body, dict) else {"message": str(body)[:200]}


def _http_error(error: urllib.error.HTTPError, what: str, base_url: str) -> CarrierError:
    status = int(error.code)
    body = _json(error.read() or b"")
    detail = str(body.get("message") or body.get("error") or error.reason)
    message = f"{what}: carrier answered {status}: {detail}"
    if status == 429:
        return CarrierError(
            E3002_RATE_LIMITED,
            message,
            status=status,
            retry_after_s=_retry_after(error.headers.get("Retry-After")),
        )
    if status == 422:
        return CarrierError(
            E3003_ADDRESS_REJECTED, message, status=status, hint="correct the order's address"
        )
    if status == 401:
        return CarrierError(
            E5001_UNAUTHORIZED,
            message,
            status=status,
            hint=f"check the carrier token configured for {base_url}",
        )
    if status == 403:
        return CarrierError(E5002_FORBIDDEN, message, status=status)
    if status >= 500:
        return CarrierError(E3004_SERVICE_UNAVAILABLE, message, status=status)
    return CarrierError(E3005_REQUEST_REFUSED, message, status=status)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        # An HTTP-date is allowed too; treat it as "soon" rather than parse calendars here.
        return 1.0
