"""Fetching an asset's input URL into object storage (``assets/<id>/input``), streamed, bounded and policed.

- ``http(s)``: every hop of a redirect chain is checked with :func:`kinoray.control.urls.check_public_url`
  (at most 5 hops), and every connection checks the addresses it actually connects to
  (:mod:`kinoray.control.outbound`: no DNS rebinding, no environment proxies); the whole fetch is bounded by
  ``api.ingest_timeout_seconds``; bodies larger than ``limits.max_file_bytes`` are refused while streaming.
- ``s3://``: read with the platform's storage credentials and endpoint.
- ``file://``: only when ``api.allow_file_inputs``.

Errors are typed: a refused URL is ``InputUrlRefusedError``, an unreachable/failed fetch ``InvalidMediaError``
with the reason (the asset errors with it), a too-large body ``MediaLimitError``.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import IO, Any

from kinoray.control.outbound import policed_handlers
from kinoray.control.urls import check_public_url
from kinoray.errors import InvalidMediaError, KinorayError, MediaLimitError
from kinoray.settings import Settings
from kinoray.store.objects import ObjectStore, open_url

__all__ = ["fetch_input", "read_url"]

log = logging.getLogger(__name__)

_READ_SIZE = 1024 * 1024
_MAX_REDIRECTS = 5


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hops = 0

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        self.hops += 1
        if self.hops > _MAX_REDIRECTS:
            raise InvalidMediaError(f"input URL redirected more than {_MAX_REDIRECTS} times")
        check_public_url(newurl, self.settings)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, settings: Settings) -> IO[bytes]:
    check_public_url(url, settings)
    if url.startswith(("http://", "https://")):
        # The connection itself checks the addresses it connects to (no DNS-rebinding window).
        opener = urllib.request.build_opener(*policed_handlers(settings), _CheckedRedirects(settings))
        request = urllib.request.Request(url, headers={"User-Agent": "kinoray-ingest"})
        try:
            return opener.open(request, timeout=min(60.0, settings.api.ingest_timeout_seconds))
        except urllib.error.HTTPError as error:
            raise InvalidMediaError(f"fetching the input URL failed: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise InvalidMediaError(f"fetching the input URL failed: {reason}") from None
    try:
        return open_url(url, settings.storage)
    except KinorayError:
        raise
    except (OSError, ValueError) as error:
        raise InvalidMediaError(f"cannot open the input URL: {error}") from None


def fetch_input(url: str, store: ObjectStore, key: str, settings: Settings) -> int:
    """Copy ``url`` to ``store[key]``; returns the byte count. Nothing is stored when it fails."""
    limit = settings.limits.max_file_bytes
    deadline = time.monotonic() + settings.api.ingest_timeout_seconds
    started = time.monotonic()

    def chunks(source: IO[bytes]) -> Iterator[bytes]:
        total = 0
        while True:
            try:
                chunk = source.read(_READ_SIZE)
            except (OSError, ValueError) as error:
                raise InvalidMediaError(f"reading the input URL failed: {error}") from None
            if not chunk:
                return
            total += len(chunk)
            if total > limit:
                raise MediaLimitError(f"the input is larger than the {limit}-byte limit")
            if time.monotonic() > deadline:
                raise InvalidMediaError(
                    f"fetching the input took longer than {settings.api.ingest_timeout_seconds:g} s")
            yield chunk

    with _open(url, settings) as source:
        written = store.put_stream(chunks(source), key)
    if written == 0:
        store.delete(key)
        raise InvalidMediaError("the input URL returned no data")
    log.info("input fetched", extra={"bytes": written, "seconds": round(time.monotonic() - started, 3)})
    return written


def read_url(url: str, settings: Settings, *, max_bytes: int) -> bytes:
    """The body at ``url`` (a small file: a live stream's slate image), fetched as :func:`fetch_input` fetches
    (the same URL policy, redirect checks and time limit).

    Raises:
        InputUrlRefusedError: the URL is refused by the policy.
        InvalidMediaError: the fetch failed or returned nothing.
        MediaLimitError: the body is larger than ``max_bytes``.
    """
    deadline = time.monotonic() + settings.api.ingest_timeout_seconds
    body = bytearray()
    with _open(url, settings) as source:
        while True:
            try:
                chunk = source.read(min(_READ_SIZE, max_bytes + 1 - len(body)))
            except (OSError, ValueError) as error:
                raise InvalidMediaError(f"reading the URL failed: {error}") from None
            if not chunk:
                break
            body += chunk
            if len(body) > max_bytes:
                raise MediaLimitError(f"the file at the URL is larger than {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise InvalidMediaError(f"fetching took longer than {settings.api.ingest_timeout_seconds:g} s")
    if not body:
        raise InvalidMediaError("the URL returned no data")
    return bytes(body)
