"""The hand-off from the ingest server's event loop to the live transcoder's thread: FLV tags in, an FLV byte
stream out (what FFmpeg's FLV demuxer reads through PyAV), bounded in bytes so a transcoder that cannot keep
up ends the session instead of growing without limit.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from kinoray.media.flv import FlvTag, flv_header

__all__ = ["TagPipe"]


class TagPipe:
    """A :class:`~kinoray.live.rtmp.Publisher` whose bytes a reader thread takes with :meth:`read`.

    :meth:`media` never blocks (it runs on the ingest server's event loop): past ``max_bytes`` waiting to be
    read, the pipe fails with ``overflow`` set and the reader sees the end of the stream. :meth:`ended` closes
    it; the reader then gets what is left and ``b""``."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._chunks: deque[bytes] = deque([flv_header()])
        self._pending = len(self._chunks[0])
        self._closed = False
        self._ready = threading.Condition()
        self.error: str | None = None
        self.overflow = False
        self.tags = 0
        #: The publisher's clock: the wall time (Unix seconds) its media timestamp 0 was sent, estimated as the
        #: earliest of every write's arrival less its last tag's FLV timestamp (a write that waited — the
        #: batches queued while a transcoder actor started — only makes a later estimate, which the minimum
        #: drops). ``None`` before any media.
        self.clock: float | None = None

    # --- the publisher side (event loop) ---------------------------------------------------------------------

    def media(self, tag: FlvTag) -> None:
        self.write(tag.to_bytes(), tags=1)

    def write(self, data: bytes, tags: int = 0) -> None:
        """Append FLV tag bytes (a batch of whole tags, as an ingest on another machine sends them)."""
        with self._ready:
            if self._closed:
                return
            if self._pending + len(data) > self.max_bytes:
                self.overflow, self._closed = True, True
                self.error = f"the live transcoder fell more than {self.max_bytes} bytes behind the publisher"
            else:
                self._chunks.append(data)
                self._pending += len(data)
                self.tags += tags
                last = _last_timestamp(data)
                if last is not None:
                    clock = time.time() - last / 1000
                    self.clock = clock if self.clock is None else min(self.clock, clock)
            self._ready.notify_all()

    def ended(self, error: str | None) -> None:
        with self._ready:
            if not self._closed:
                self._closed, self.error = True, error
            self._ready.notify_all()

    # --- the reader side (the transcoder's thread) -----------------------------------------------------------

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is buffered for ``size < 0``), waiting for some; ``b""`` at the end."""
        with self._ready:
            while not self._chunks and not self._closed:
                self._ready.wait()
            if self.overflow:
                return b""
            out = bytearray()
            while self._chunks and (size < 0 or len(out) < size):
                chunk = self._chunks.popleft()
                room = len(chunk) if size < 0 else size - len(out)
                out += chunk[:room]
                if room < len(chunk):
                    self._chunks.appendleft(chunk[room:])
            self._pending -= len(out)
            return bytes(out)

    @property
    def closed(self) -> bool:
        with self._ready:
            return self._closed


def _last_timestamp(data: bytes) -> int | None:
    """The FLV timestamp (ms) of the last whole tag in ``data`` (whole tags, each with its PreviousTagSize)."""
    position, last = 0, None
    while position + 15 <= len(data):
        size = int.from_bytes(data[position + 1:position + 4], "big")
        last = int.from_bytes(data[position + 4:position + 7], "big") | data[position + 7] << 24
        position += 11 + size + 4
    return last
