"""Forwarding to the management API: what makes one port a whole product. Paths the edge does not serve itself
(``/video/v1/...``, ``/system/v1/...``, ``/healthz``, ``/metrics``, ``/docs``, ``/openapi.json``) go to
``edge.api_url`` (Serve's HTTP proxy) over a keep-alive connection pool, bodies streamed both ways.

Each edge process has at most ``edge.max_forwarded_in_flight`` calls in flight to the API, and one client at most
``api.max_in_flight_per_client`` of them; past that it sheds them itself with a typed ``503 over_capacity`` (or
``429`` for the client over its share) and ``Retry-After``: refusing here costs a fraction of what the same
refusal costs after HAProxy and a replica. Serve's own plain-text ``503`` (its queue bound) is answered as
the same typed ``503 over_capacity``.
Request bodies are held to the API's own limit (``api.max_body_bytes``) here already: a declared longer one is
refused with ``413 request_too_large`` before it is read, a chunked one is cut where it passes the limit.
Hop-by-hop headers are dropped (RFC 9110 §7.6.1) and ``X-Forwarded-For/-Proto/-Host`` added. When the API
cannot be reached the answer is a typed ``502 api_unavailable`` with ``Retry-After``; nothing is retried,
since a request with a body may already have had its effect.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import aiohttp

from kinoray.errors import ApiUnavailableError, OverCapacityError, RequestTooLargeError
from kinoray.serve.asgi import Receive, Scope, Send, send_error
from kinoray.serve.guard import ALWAYS_ADMITTED, Slots, body_too_large
from kinoray.telemetry import REQUESTS_SHED

__all__ = ["Forwarder"]

log = logging.getLogger(__name__)

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                         "trailer", "transfer-encoding", "upgrade", "host", "content-length"})
_BLOCK = 64 * 1024


class Forwarder:
    """Forwards ASGI HTTP requests to ``api_url``. One connection pool per process, opened on first use."""

    def __init__(self, api_url: str, *, timeout: float = 60.0, connections: int = 256,
                 max_body_bytes: int = 1024**2, max_in_flight: int = 32, max_in_flight_per_client: int = 8,
                 client_of: Callable[[Scope], str] = lambda scope: (scope.get("client") or ("unknown", 0))[0]) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout, self.connections, self.max_body_bytes = timeout, connections, max_body_bytes
        self.max_in_flight, self.max_in_flight_per_client = max_in_flight, max_in_flight_per_client
        self.client_of = client_of
        self.slots = Slots()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=5),
                auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] in ALWAYS_ADMITTED:
            await self._forward(scope, receive, send)
            return
        client = self.client_of(scope)
        refusal = self.slots.take(client, self.max_in_flight, self.max_in_flight_per_client,
                                  "calls in flight from this edge process")
        if refusal is not None:
            REQUESTS_SHED.labels(reason=refusal.type).inc()
            await send_error(send, refusal, head=scope["method"] == "HEAD")
            return
        try:
            await self._forward(scope, receive, send)
        finally:
            self.slots.give(client)

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        url = self.api_url + raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        headers: list[tuple[str, str]] = []
        host = ""
        forwarded_for = ""
        has_body = False
        declared = 0
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            if name == "host":
                host = value
            elif name == "x-forwarded-for":
                forwarded_for = value
            elif name in ("content-length", "transfer-encoding"):
                has_body = has_body or name == "transfer-encoding" or value.strip() not in ("", "0")
                if name == "content-length" and value.strip().isdigit():
                    declared = int(value)
            if name not in _HOP_BY_HOP and name != "x-forwarded-for":
                headers.append((name, value))
        client = (scope.get("client") or ("", 0))[0]
        headers.append(("x-forwarded-for", f"{forwarded_for}, {client}" if forwarded_for else client))
        headers.append(("x-forwarded-proto", scope.get("scheme", "http")))
        if host:
            headers.append(("x-forwarded-host", host))
        head = scope["method"] == "HEAD"
        if declared > self.max_body_bytes:
            await send_error(send, body_too_large(self.max_body_bytes), {"Connection": "close"}, head=head)
            return
        body = _body(receive, self.max_body_bytes) if has_body else None
        started = False
        try:
            async with self._client().request(scope["method"], url, headers=headers, data=body,
                                              allow_redirects=False) as answer:
                if answer.status == 503 and answer.content_type != "application/json":
                    # Serve's own refusal past its queue bound ("Request dropped due to backpressure"), plain
                    # text: told in kinoray's error format, like the API's own shedding
                    await send_error(send, OverCapacityError("the API is past its capacity; try again shortly"),
                                     head=head)
                    return
                out = [(name, value) for name, value in answer.headers.items() if name.lower() not in _HOP_BY_HOP]
                if "Content-Length" in answer.headers:
                    out.append(("content-length", answer.headers["Content-Length"]))
                await send({"type": "http.response.start", "status": answer.status,
                            "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in out]})
                started = True
                if not head:
                    async for block in answer.content.iter_chunked(_BLOCK):
                        await send({"type": "http.response.body", "body": block, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (RequestTooLargeError, aiohttp.ClientConnectionError, TimeoutError) as error:
            # a chunked body that passed the limit while it was forwarded: aiohttp reports the refusal _body raised
            # as a failed send on the connection, with the refusal as its cause
            too_large = error if isinstance(error, RequestTooLargeError) else error.__cause__
            if isinstance(too_large, RequestTooLargeError):
                if started:
                    raise
                await send_error(send, too_large, {"Connection": "close"}, head=head)
                return
            log.warning("management API unreachable", extra={"url": self.api_url, "error": str(error)[:200]})
            if started:
                raise  # the answer is under way: the server ends the connection, the client sees a cut
            await send_error(send, ApiUnavailableError(
                f"the management API did not answer ({type(error).__name__}); retry shortly"), head=head)


async def _body(receive: Receive, limit: int) -> AsyncIterator[bytes]:
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return

