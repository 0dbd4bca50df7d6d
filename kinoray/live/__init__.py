"""Live video: ingest from publishers (RTMP, WHIP; :mod:`kinoray.live.ingest` is the interface they share),
WHEP playback, the live ladder and its packaging.

Pure asyncio, PyAV and aiortc (WHIP/WHEP's signalling on aiohttp's small server), no Ray and no web framework:
the cluster layer places live work, the control plane decides which stream keys are valid (the ``authorize``
callback of every :class:`IngestServer`).
"""

from kinoray.live.ingest import IngestServer
from kinoray.live.rtmp import Publisher, PublishRequest, RtmpServer
from kinoray.live.whip import WhipServer
from kinoray.media.flv import FlvTag, flv_header

__all__ = ["FlvTag", "IngestServer", "PublishRequest", "Publisher", "RtmpServer", "WhipServer", "flv_header"]
