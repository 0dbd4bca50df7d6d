"""Live video: ingest from publishers (RTMP), later the live ladder and its packaging.

Pure asyncio and PyAV, no Ray and no HTTP framework: the cluster layer places live work, the control plane
decides which stream keys are valid (the ``authorize`` callback of :class:`RtmpServer`).
"""

from kinoray.live.rtmp import Publisher, PublishRequest, RtmpServer
from kinoray.media.flv import FlvTag, flv_header

__all__ = ["FlvTag", "PublishRequest", "Publisher", "RtmpServer", "flv_header"]
