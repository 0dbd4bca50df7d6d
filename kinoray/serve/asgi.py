"""The few ASGI pieces used without a framework between the server and the handler (the delivery edge's hot paths,
the API's :mod:`~kinoray.serve.guard`): a parsed request, whole-body and error responses in kinoray's error format.

The edge answers each stream request with two or three ASGI messages, framework-free, to keep the Python per
request small: on this path it is what separates the edge from a bare ASGI app on Granian (docs/ARCHITECTURE.md,
"Delivery edge", has both numbers). :func:`keep_worker_threads` is for a server whose event loop is not
``asyncio.run``'s (a Ray Serve replica).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from kinoray.control.clients import ClientAddresses
from kinoray.errors import KinorayError, http_status

__all__ = [
    "Receive",
    "Scope",
    "Send",
    "EdgeRequest",
    "client_of_scope",
    "identify_worker",
    "keep_worker_threads",
    "send_error",
    "send_response",
    "send_start",
    "served_by",
]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_served_by = b""


def identify_worker() -> None:
    """Name this process in ``X-Served-By`` (as CDNs name their cache node): operators and the invalidation
    tests tell the worker processes apart by it. Called where each worker builds its app (a forked worker
    must not keep its parent's name)."""
    global _served_by
    _served_by = f"kinoray-edge-{os.getpid()}".encode()


identify_worker()


def served_by() -> str:
    """This process's name in ``X-Served-By``."""
    return _served_by.decode()


@dataclass(frozen=True)
class EdgeRequest:
    """What the handlers read of an HTTP request: method, path, query (the last value of a repeated name wins,
    as Starlette's ``query_params.get`` does) and headers by lower-case name."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    pathsend: bool  # the server takes ``http.response.pathsend`` (Granian: it sends the file itself)

    @classmethod
    def from_scope(cls, scope: Scope) -> EdgeRequest:
        raw_query = scope.get("query_string", b"")
        query = dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)) if raw_query else {}
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        return cls(method=scope["method"], path=scope["path"], query=query, headers=headers,
                   pathsend="http.response.pathsend" in (scope.get("extensions") or {}))


def _header_list(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    encoded.append((b"x-served-by", _served_by))
    return encoded


async def send_response(send: Send, status: int, headers: Mapping[str, str], body: bytes = b"",
                        *, head: bool = False) -> None:
    """One whole response. ``Content-Length`` is set from ``body`` unless given; ``head`` sends no body."""
    if "Content-Length" not in headers and status != 304 and not 100 <= status < 200 and status != 204:
        headers = {**headers, "Content-Length": str(len(body))}
    await send({"type": "http.response.start", "status": status, "headers": _header_list(headers)})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def send_start(send: Send, status: int, headers: Mapping[str, str]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _header_list(headers)})


def _error_body(error_type: str, messages: list[str]) -> bytes:
    return json.dumps({"error": {"type": error_type, "messages": messages}}).encode()


async def send_error(send: Send, error: KinorayError, extra_headers: Mapping[str, str] | None = None,
                     *, head: bool = False) -> None:
    """``error`` as kinoray's error body with its status (and the headers it carries)."""
    headers = {**(extra_headers or {}), **error.http_headers(), "Content-Type": "application/json"}
    await send_response(send, http_status(error), headers, _error_body(error.type, [str(error)]), head=head)


def client_of_scope(clients: ClientAddresses, scope: Scope) -> str:
    """The client address of an ASGI request (:mod:`kinoray.control.clients`: the peer, or behind a trusted proxy
    the client its ``X-Forwarded-For`` names), before any routing."""
    peer = (scope.get("client") or (None, 0))[0]
    forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
    return clients.client(peer, b", ".join(forwarded).decode("latin-1") if forwarded else None)


#: The tasks :func:`keep_worker_threads` started (the loop keeps only weak references to its tasks).
_root_tasks: set[asyncio.Task[Any]] = set()


def keep_worker_threads() -> bool:
    """Have anyio keep its worker threads between requests on the running event loop; ``False`` when this anyio
    offers no way to (logged). Call on the loop, before it serves.

    Starlette and FastAPI run every sync route, sync dependency and a sync route's answer validation in
    ``anyio.to_thread.run_sync``, whose worker threads live as long as the loop's "root task". Under
    ``asyncio.run`` (uvicorn, Granian) that is the server's main task. A Ray Serve replica's loop runs with
    ``run_forever`` and has none, so anyio took each request's own task: every request started a thread and
    stopped it when it ended (docs/ARCHITECTURE.md, "Measured: the management API on Serve"). A task that
    lives as long as the loop, registered as anyio's root task, gives the loop one pool of threads for its life
    (idle ones still leave after anyio's 10 s). anyio has no public call for this: the run variable is its
    private ``_root_task`` (``tests/test_api_cost.py`` fails if that stops working).
    """
    try:
        from anyio._backends._asyncio import _root_task
    except ImportError:
        log.warning("anyio has no _root_task: each request may start a worker thread of its own")
        return False
    try:
        loop = asyncio.get_running_loop()
        current = _root_task.get(None)
    except RuntimeError:  # no loop running here (sniffio's "no async library" is a RuntimeError too)
        log.warning("keep_worker_threads called off an event loop: each request may start a worker thread")
        return False
    if current is not None and not current.done():
        return True
    task = loop.create_task(asyncio.Event().wait(), name="kinoray-anyio-root")
    _root_tasks.add(task)
    task.add_done_callback(_root_tasks.discard)
    _root_task.set(task)
    return True
