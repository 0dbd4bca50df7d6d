"""Outbound HTTP(S) whose connections are policed where they are made: no DNS-rebinding window.

:func:`kinoray.control.urls.check_public_url` resolves a URL's host when the URL is accepted and again before
each fetch, but the HTTP client then resolves the name once more to connect, and a hostile DNS server can
answer that third lookup with ``127.0.0.1`` or ``169.254.169.254`` (DNS rebinding). The connections made here
resolve the host themselves, refuse it if *any* address it resolves to is not public (unless
``api.allow_private_inputs``), and connect to exactly those checked addresses. HTTPS still verifies the
certificate against the host name (SNI and ``check_hostname`` use the name, not the address).

Environment proxies are never used: a proxy would resolve the name itself, out of the policy's reach.
"""

from __future__ import annotations

import functools
import http.client
import socket
import urllib.request
from collections.abc import Callable
from typing import Any

from kinoray.control.urls import check_addresses
from kinoray.settings import Settings

__all__ = ["policed_handlers"]

#: Given a host and the addresses a connection is about to use: raises InputUrlRefusedError when the policy
#: forbids any of them.
AddressCheck = Callable[[str, list[str]], None]


def _address_check(settings: Settings, purpose: str) -> AddressCheck:
    return functools.partial(check_addresses, settings=settings, purpose=purpose, when=" at connection time")


_DEFAULT_TIMEOUT: Any = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]  # "not given"


def _connect(check: AddressCheck, address: tuple[str, int], timeout: Any = _DEFAULT_TIMEOUT,
             source_address: tuple[str, int] | None = None) -> socket.socket:
    """``socket.create_connection`` with the policy applied to the very addresses it connects to."""
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise OSError(f"cannot resolve host {host!r}: {error}") from None
    # every answer, not only the one tried first: a mixed answer is refused as a whole
    check(host, [str(info[4][0]) for info in infos])
    failures: list[OSError] = []
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not _DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as failure:
            failures.append(failure)
            sock.close()
    raise failures[-1] if failures else OSError(f"no address to connect to for {host!r}")


class _PolicedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, check: AddressCheck, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(_connect, check)


class _PolicedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, check: AddressCheck, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(_connect, check)


class _PolicedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, check: AddressCheck) -> None:
        super().__init__()
        self._check = check

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_PolicedHTTPConnection, check=self._check), req)


class _PolicedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, check: AddressCheck) -> None:
        super().__init__()
        self._check = check

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        context = getattr(self, "_context", None)  # HTTPSHandler's own (None: the default TLS context)
        return self.do_open(functools.partial(_PolicedHTTPSConnection, check=self._check), req, context=context)


def policed_handlers(settings: Settings, purpose: str = "input") -> list[urllib.request.BaseHandler]:
    """urllib handlers for ``http``/``https`` whose connections apply the SSRF address policy (see the module
    doc), plus an empty proxy handler (no environment proxies). Build an opener from them and whatever else
    it needs (a redirect handler)."""
    check = _address_check(settings, purpose)
    return [urllib.request.ProxyHandler({}), _PolicedHTTPHandler(check), _PolicedHTTPSHandler(check)]
