"""The ingest layer: the ways a publisher reaches the live runtime, behind one small interface.

An ingest protocol (:class:`IngestServer`) is a server the runtime (:mod:`kinoray.serve.live_ingest`) starts on
its event loop and stops with it. For each publisher it

1. learns the stream key (RTMP: the stream name of ``publish``; WHIP: the URL or ``Authorization: Bearer``),
2. asks ``authorize`` (:data:`Authorize`) with a :class:`PublishRequest` **before accepting any media**, and on
   ``None`` refuses the publisher in its protocol's way and counts the refusal in
   :data:`~kinoray.telemetry.LIVE_INGEST_REFUSED` (``reason``: ``bad_key``, ``no_key``, ``disabled``, ``busy``,
   ``protocol``, ``timeout``, ...);
3. hands the accepted session's media to the :class:`Publisher` it got, as FLV tags — H.264 video and AAC audio,
   the tags an RTMP publisher sends — from the event loop, without blocking, then calls ``ended`` once;
4. disconnects a publisher when the runtime asks (:meth:`IngestServer.drop`: its stream was disabled, completed,
   deleted or ran out of time).

The runtime's session is also :class:`Tappable`: what WHEP viewers of a stream published over RTMP (or any
protocol but WHIP, whose frames they get directly) are sent comes from its tags.

FLV tags are the runtime's one input because the recording (the source as sent), the live ladder
(:mod:`kinoray.live.transcode`, FFmpeg's FLV demuxer) and simulcast (a remux to RTMP) all take them; a protocol
whose media is something else converts (WHIP: decoded frames through :class:`~kinoray.live.bridge.FlvBridge`).

Implementations: :class:`~kinoray.live.rtmp.RtmpServer` (``rtmp``) and :class:`~kinoray.live.whip.WhipServer`
(``whip``, which also serves WHEP playback). **SRT** would be a third: PyAV's wheel has no ``libsrt`` (its
FFmpeg lists no ``srt`` protocol: :func:`protocols_available`), so an SRT server needs either a PyAV built
against an FFmpeg with ``--enable-libsrt`` (then an ``srt://…?mode=listener`` input per publisher, the stream id
``#!::r=KEY`` as the key, MPEG-TS demuxed and its H.264/AAC packets written as FLV tags) or a Python binding of
libsrt; either would be an ``IngestServer`` named ``srt`` here, with nothing else changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from kinoray.live.rtmp import Authorize, Publisher, PublishRequest
from kinoray.media.flv import FlvTag

__all__ = ["Authorize", "IngestServer", "Publisher", "PublishRequest", "Tappable", "protocols_available"]


@runtime_checkable
class IngestServer(Protocol):
    """One ingest protocol's server (see the module docstring). Every method runs on the runtime's loop."""

    #: The protocol's name (``rtmp``, ``whip``), as logs and metrics show it.
    protocol: str

    async def start(self) -> int:
        """Start listening; the port (a configured 0 picks a free one)."""

    async def close(self) -> None:
        """Stop listening and end every session (their publishers see ``ended``)."""

    def drop(self, key: str) -> bool:
        """Disconnect the publisher of ``key``; ``False`` if none publishes with it here."""

    @property
    def publishing(self) -> int:
        """How many publishers send now."""


class Tappable(Protocol):
    """A live session whose tags others may follow (WHEP viewers of an RTMP publish)."""

    def tap(self, listener: Callable[[FlvTag | None], None]) -> Callable[[], None]:
        """Call ``listener`` on the loop with the stream's header tags now, every tag from now on, and ``None``
        when the publisher is gone; returns the call that stops it."""


@functools.cache
def protocols_available() -> frozenset[str]:
    """The input protocols of the FFmpeg inside PyAV's wheel (``avio_enum_protocols``; PyAV does not expose the
    list). PyAV 18.1's: no ``srt`` — see the module docstring."""
    import av

    libraries = sorted((Path(av.__file__).parent.parent / "av.libs").glob("libavformat*"))
    if not libraries:  # a PyAV linked against the system's FFmpeg
        libraries = [Path(ctypes.util.find_library("avformat") or "libavformat.so")]
    library = ctypes.CDLL(str(libraries[0]))
    library.avio_enum_protocols.restype = ctypes.c_char_p
    library.avio_enum_protocols.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    state, names = ctypes.c_void_p(None), set()
    while (name := library.avio_enum_protocols(ctypes.byref(state), 0)) is not None:
        names.add(name.decode())
    return frozenset(names)
