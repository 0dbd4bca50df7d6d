"""The live ladder's top rung passed through: the publisher's own H.264 pictures repackaged into CMAF, no decode
and no encode (:mod:`kinoray.live.transcode` uses it when ``LiveOptions.source_passthrough`` is ``auto``).

**When.** The source must be H.264, no larger than the ladder's top (the passed-through rung *is* the top rung,
at the source's size), and its IDRs must come often enough to cut segments at: a segment can start only where
the source has an IDR, since its pictures are not re-encoded. :func:`measure_gop` reads the stream's first two
IDRs (holding back at most ``segment × max_gop`` seconds of packets, once, at the start); a longer keyframe
interval, or a stream that is not H.264, is transcoded as before.

**Where segments start.** :class:`SegmentCuts`: every ``n`` source IDRs, ``n = round(segment / gop)`` (at least
1) — segments of the source GOP's whole multiple nearest to the asked length, on a grid counted from the first
IDR, so an irregular IDR (a scene cut) does not shift the later ones. The encoded lower rungs get an IDR forced
on the same pictures, so every rung's segments start at the same presentation time. Parts (LL-HLS) are cut on
a time grid inside each segment; only a segment's first part starts with an IDR.

Cost and trade-off (docs/ARCHITECTURE.md, "Live"): the top rung's encode (most of a ladder's CPU) is saved, and
its quality is the publisher's; segment length and so latency follow the publisher's keyframe interval, and its
bitrate is the publisher's (the master's ``BANDWIDTH`` is measured, :class:`BitrateMeter`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

__all__ = ["BitrateMeter", "GopMeasure", "SegmentCuts", "is_idr", "length_size", "measure_gop"]

log = logging.getLogger(__name__)

_IDR = 5


def length_size(avc_configuration: bytes) -> int:
    """The NAL unit length field's size (1, 2 or 4 bytes) an ``avcC`` record declares.

    Raises:
        ValueError: not an ``avcC`` record (a source whose parameter sets are in-band Annex B).
    """
    if len(avc_configuration) < 7 or avc_configuration[0] != 1:
        raise ValueError("not an avcC record")
    return (avc_configuration[4] & 0x03) + 1


def is_idr(access_unit: bytes, size: int) -> bool:
    """Whether a length-prefixed H.264 access unit holds an IDR slice (an RTMP keyframe flag alone may mark an
    open-GOP I picture, which a segment cannot start with)."""
    position = 0
    while position + size < len(access_unit):
        length = int.from_bytes(access_unit[position:position + size], "big")
        position += size
        if length <= 0 or position + length > len(access_unit):
            return False
        if access_unit[position] & 0x1F == _IDR:
            return True
        position += length
    return False


@dataclass(frozen=True)
class GopMeasure:
    """What the first packets said: ``gop`` (seconds between the first two IDRs; ``None``: no second IDR within
    the limit, or none at all), the packets read meanwhile (to be processed before the rest) and the bytes of
    video between the first two IDRs (the first bitrate estimate)."""

    gop: Fraction | None
    held: list[Any]
    gop_bytes: int


def measure_gop(packets: Iterator[Any], video: Any, size: int, limit: Fraction) -> GopMeasure:
    """Read ``packets`` (a demuxer's) until the second IDR of ``video`` or ``limit`` seconds past the first. A
    stream that ends first counts as passable when what it sent was within the limit (its one GOP is short)."""
    held: list[Any] = []
    first: Fraction | None = None
    last: Fraction | None = None
    gop_bytes = 0
    for packet in packets:
        held.append(packet)
        if packet.stream is not video or packet.pts is None:
            continue
        when = Fraction(packet.pts) * video.time_base
        idr = packet.is_keyframe and is_idr(bytes(packet), size)
        if first is not None and idr and when > first:
            return GopMeasure(when - first, held, gop_bytes)
        if first is None and idr:
            first = when
        if first is not None:
            gop_bytes += packet.size
            last = when
            if when - first > limit:
                return GopMeasure(None, held, 0)
    if first is None or last is None:
        return GopMeasure(None, held, 0)
    return GopMeasure(max(last - first, Fraction(1, 1000)), held, gop_bytes)


class SegmentCuts:
    """Which source IDRs start segments: the first IDR at or after each line of a grid of ``segment`` seconds
    counted from the first IDR (``tolerance`` early counts as on the line: FLV rounds times to milliseconds)."""

    def __init__(self, segment: Fraction, tolerance: Fraction) -> None:
        if segment <= 0:
            raise ValueError("a segment grid needs a positive segment")
        self.segment, self.tolerance = segment, tolerance
        self._origin: Fraction | None = None
        self._next = Fraction(0)

    @classmethod
    def for_gop(cls, target: Fraction, gop: Fraction, tolerance: Fraction) -> SegmentCuts:
        """Segments of the whole number of ``gop`` nearest to ``target`` (at least one GOP)."""
        return cls(max(1, round(target / gop)) * gop, tolerance)

    def cut(self, when: Fraction) -> bool:
        """Asked for each IDR in order (``when``: its presentation time in seconds): whether a segment starts."""
        if self._origin is None:
            self._origin = when
        offset = when - self._origin
        if offset < self._next - self.tolerance:
            return False
        while self._next - self.tolerance <= offset:
            self._next += self.segment
        return True


class BitrateMeter:
    """The passed-through rung's peak segment bitrate (HLS ``BANDWIDTH``), counted from its packets' sizes
    between segment starts."""

    def __init__(self, initial: int) -> None:
        self.peak = initial
        self._bytes = 0
        self._start: Fraction | None = None

    def add(self, size: int) -> None:
        self._bytes += size

    def cut(self, when: Fraction) -> bool:
        """A segment starts at ``when`` (seconds): whether the one that ended raised the peak by more than 10 %
        (worth a new master playlist)."""
        raised = False
        if self._start is not None and when > self._start:
            rate = math.ceil(self._bytes * 8 / (when - self._start))
            raised = rate > self.peak * 1.1
            self.peak = max(self.peak, rate)
        self._start, self._bytes = when, 0
        return raised
