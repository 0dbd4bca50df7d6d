"""The management API's front door: load shedding and request-body limits, before routing and authentication.

:class:`RequestGuard` is ASGI middleware around :func:`kinoray.serve.api.build_api`'s app. For each request:

1. **Load shedding.** At most ``api.max_in_flight`` requests are worked on at once in this process; one more is
   answered at once with ``503 over_capacity`` and ``Retry-After`` instead of queueing until it times out, so
   the requests that are admitted keep their latency and throughput holds under overload. One client address
   (:mod:`kinoray.control.clients`) may hold at most ``api.max_in_flight_per_client`` of them; past that its
   requests get ``429 too_many_requests`` at once, so a flood from one client (a wrong-secret flood, a runaway
   script) cannot take the others' share. Health checks and metrics are always admitted (a supervisor must see
   a busy process as alive).
2. **Body limits.** A declared ``Content-Length`` over ``api.max_body_bytes`` is refused with
   ``413 request_too_large`` before a byte of it is read. Otherwise the body is read here, counted (a chunked body
   that passes the limit is refused the same way) and timed (``api.body_timeout_seconds`` for the whole body:
   a client trickling bytes gets ``408 request_timeout``), then handed to the app. So an unauthenticated caller
   costs at most ``max_body_bytes`` of memory, never the size it claims, and authentication only ever sees
   complete, bounded bodies. The management API takes JSON only: media bytes go to the delivery edge's upload
   URL, which streams them to storage under ``api.max_upload_bytes``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from kinoray.errors import (
    KinorayError,
    OverCapacityError,
    RateLimitedError,
    RequestTimeoutError,
    RequestTooLargeError,
)
from kinoray.serve.asgi import Message, Receive, Scope, Send, send_error
from kinoray.settings import ApiSettings
from kinoray.telemetry import REQUESTS_SHED

__all__ = ["ALWAYS_ADMITTED", "RequestGuard", "Slots", "body_too_large"]

#: Paths always admitted: liveness/readiness probes and the metrics scrape.
ALWAYS_ADMITTED = frozenset({"/healthz", "/readyz", "/metrics"})


class Slots:
    """Requests in progress in one process (one event loop: no lock needed), at most ``total`` at once and
    ``per_client`` of them for one client address. :meth:`take` a slot or get the refusal; :meth:`give` it back."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.by_client: dict[str, int] = {}

    def take(self, client: str, total: int, per_client: int, what: str) -> KinorayError | None:
        """A slot for ``client``, or the refusal: ``503 over_capacity`` past ``total`` (``what`` names the limit),
        ``429`` past ``per_client``."""
        if self.in_flight >= total:
            return OverCapacityError(f"the API is past its capacity ({total} {what}); try again shortly")
        held = self.by_client.get(client, 0)
        if held >= per_client:
            return RateLimitedError(f"{held} requests from this client are in progress (at most {per_client}); "
                                    f"try again shortly", 1.0, per_client)
        self.in_flight += 1
        self.by_client[client] = held + 1
        return None

    def give(self, client: str) -> None:
        self.in_flight -= 1
        held = self.by_client[client] - 1
        if held:
            self.by_client[client] = held
        else:
            del self.by_client[client]


class RequestGuard:
    """ASGI middleware: see the module docstring. ``limits`` returns the settings in force (read per request, so a
    process's platform can be installed after the app is built)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], object], limits: Callable[[], ApiSettings],
                 client_of: Callable[[Scope], str]) -> None:
        self.app = app
        self.limits = limits
        self.client_of = client_of
        self.slots = Slots()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ALWAYS_ADMITTED:
            await self.app(scope, receive, send)  # type: ignore[misc]
            return
        limits = self.limits()
        client = self.client_of(scope)
        refusal = self.slots.take(client, limits.max_in_flight, limits.max_in_flight_per_client,
                                  "requests in progress")
        if refusal is not None:
            REQUESTS_SHED.labels(reason=refusal.type).inc()
            await send_error(send, refusal)
            return
        try:
            try:
                receive = await self._bounded_body(scope, receive, limits)
            except KinorayError as error:
                REQUESTS_SHED.labels(reason=error.type).inc()
                await send_error(send, error, {"Connection": "close"})
                return
            await self.app(scope, receive, send)  # type: ignore[misc]
        finally:
            self.slots.give(client)

    @staticmethod
    async def _bounded_body(scope: Scope, receive: Receive, limits: ApiSettings) -> Receive:
        """``receive`` replaying the whole body, read here under the size and time limits."""
        declared: int | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise RequestTooLargeError("Content-Length is not a number") from None
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and declared > limits.max_body_bytes:
            raise body_too_large(limits.max_body_bytes)
        if not chunked and not declared:
            return receive
        parts: list[bytes] = []
        size = 0
        disconnected: Message | None = None

        async def read() -> None:
            nonlocal size, disconnected
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = message
                    return
                body = message.get("body", b"")
                size += len(body)
                if size > limits.max_body_bytes:
                    raise body_too_large(limits.max_body_bytes)
                parts.append(body)
                if not message.get("more_body", False):
                    return

        try:
            await asyncio.wait_for(read(), limits.body_timeout_seconds)
        except TimeoutError:
            raise RequestTimeoutError(f"the request body did not arrive within "
                                      f"{math.ceil(limits.body_timeout_seconds)} s") from None
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if disconnected is not None:
                return disconnected
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()  # after the body, only the disconnect is left to wait for

        return replay


def body_too_large(limit: int) -> RequestTooLargeError:
    """The refusal of a management-API body over ``limit`` bytes (here and at the edge's forwarder)."""
    return RequestTooLargeError(f"request body over {limit} bytes: the management API takes JSON bodies only "
                                f"(media go to an upload URL)")
