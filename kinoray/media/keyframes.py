"""Keyframe index: every video packet's timing and which ones are true random-access points.

Built from demuxed packets only (no decoding). A container's keyframe flag is not enough to cut on: MP4
marks open-GOP HEVC CRA pictures and H.264 recovery-point I-frames as sync samples. So for H.264 and HEVC
the NAL units of flagged packets are read:

* H.264: IDR slices (type 5) are random-access points; a non-IDR I-frame counts only with a recovery-point
  SEI whose ``recovery_frame_cnt`` is 0.
* HEVC: IDR (19, 20), BLA (16-18) and CRA (21). A CRA's leading pictures precede it in display order and
  are never used by a chunk that starts at or after the CRA, so a CRA is a valid start for our chunks.
* Other codecs (AV1, VP9, MPEG-2, ...): the container flag is trusted.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av

from kinoray.errors import InvalidMediaError
from kinoray.media.probe import open_input, stream_at
from kinoray.media.validate import StreamExtent

__all__ = ["KeyframeIndex", "index_keyframes", "is_random_access_point", "scan_streams"]


@dataclass(frozen=True, eq=False)
class KeyframeIndex:
    """Per-packet facts of the first video stream, in decode order, plus random-access points.

    ``pts`` entries may be ``None`` for packets without a timestamp (rare, e.g. some raw streams); such
    packets are counted but cannot be placed on the timeline.
    """

    stream_index: int
    time_base: Fraction
    pts: tuple[int | None, ...]
    dts: tuple[int | None, ...]
    keyframe: tuple[bool, ...]
    position: tuple[int | None, ...]
    size: tuple[int, ...]
    duration: tuple[int, ...]
    random_access_pts: tuple[int, ...]  # sorted presentation times of true random-access points
    rejected_keyframes: int = 0  # flagged keyframes that are not random-access points
    extents: tuple[StreamExtent, ...] = ()  # every stream's packets and span, from the same demux pass
    _sorted_pts: tuple[int, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        lengths = {len(self.pts), len(self.dts), len(self.keyframe), len(self.position), len(self.size)}
        if len(lengths) != 1:
            raise ValueError("KeyframeIndex columns differ in length")
        if not self._sorted_pts:
            object.__setattr__(self, "_sorted_pts", tuple(sorted(p for p in self.pts if p is not None)))

    @property
    def packet_count(self) -> int:
        return len(self.pts)

    @property
    def presentation_pts(self) -> tuple[int, ...]:
        """Packet timestamps sorted into display order (one per frame for frame-based codecs)."""
        return self._sorted_pts

    def random_access_at_or_before(self, pts: int) -> int:
        """The latest random-access point whose pts is ≤ ``pts`` (the first one if none precedes it)."""
        points = self.random_access_pts
        position = bisect_right(points, pts)
        return points[max(position - 1, 0)]


def _nal_units(data: bytes, length_size: int | None) -> list[bytes]:
    """Split a packet into NAL units: length-prefixed (MP4/MKV) or Annex-B start codes (TS, raw)."""
    units: list[bytes] = []
    if length_size:
        offset = 0
        while offset + length_size <= len(data):
            size = int.from_bytes(data[offset : offset + length_size], "big")
            offset += length_size
            if size <= 0 or offset + size > len(data):
                break
            units.append(data[offset : offset + size])
            offset += size
        return units
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        nxt = data.find(b"\x00\x00\x01", begin)
        end = len(data) if nxt < 0 else nxt
        unit = data[begin:end].rstrip(b"\x00") if nxt >= 0 else data[begin:end]
        if unit:
            units.append(unit)
        start = nxt
    return units


def _length_size(codec: str, extradata: bytes | None) -> int | None:
    """NAL length-prefix size from avcC/hvcC extradata; None means Annex-B."""
    if not extradata or extradata[0] != 1:
        return None
    if codec == "h264" and len(extradata) > 4:
        return (extradata[4] & 0x03) + 1
    if codec == "hevc" and len(extradata) > 21:
        return (extradata[21] & 0x03) + 1
    return None


def _read_ue(bits: str, pos: int) -> tuple[int, int]:
    zeros = 0
    while pos < len(bits) and bits[pos] == "0":
        zeros += 1
        pos += 1
    value = int(bits[pos : pos + zeros + 1], 2) - 1 if zeros else 0
    return value, pos + zeros + 1


def _h264_sei_recovery_zero(payload: bytes) -> bool:
    """True when an H.264 SEI NAL holds a recovery point with recovery_frame_cnt == 0."""
    data = payload.replace(b"\x00\x00\x03", b"\x00\x00")
    offset = 1
    while offset < len(data) and data[offset] != 0x80:
        kind = 0
        while offset < len(data) and data[offset] == 0xFF:
            kind += 255
            offset += 1
        if offset >= len(data):
            break
        kind += data[offset]
        offset += 1
        size = 0
        while offset < len(data) and data[offset] == 0xFF:
            size += 255
            offset += 1
        if offset >= len(data):
            break
        size += data[offset]
        offset += 1
        if kind == 6:  # recovery point
            bits = "".join(f"{b:08b}" for b in data[offset : offset + min(size, 8)])
            count, _ = _read_ue(bits, 0)
            return count == 0
        offset += size
    return False


def is_random_access_point(codec: str, data: bytes, length_size: int | None, flagged: bool) -> bool:
    """Whether a packet of ``codec`` starts a point decoding can begin from (see module docstring)."""
    if codec == "h264":
        units = _nal_units(data, length_size)
        types = [u[0] & 0x1F for u in units if u]
        if 5 in types:
            return True
        if flagged and 6 in types:
            return any(_h264_sei_recovery_zero(u) for u in units if u and u[0] & 0x1F == 6)
        return False
    if codec == "hevc":
        units = _nal_units(data, length_size)
        types = [(u[0] >> 1) & 0x3F for u in units if u]
        return any(16 <= t <= 21 for t in types)
    return flagged


def index_keyframes(path: str, stream_index: int | None = None) -> KeyframeIndex:
    """Demux every packet of the (first) video stream and index it. Costs one read of the file, no decode.

    Raises:
        InvalidMediaError: no video stream, or it has no random-access point at all.
    """
    container = open_input(path)
    try:
        if not container.streams.video:
            raise InvalidMediaError("file has no video stream to index")
        stream = container.streams.video[0] if stream_index is None else stream_at(container, stream_index)
        codec = stream.codec_context.name
        length_size = _length_size(codec, stream.codec_context.extradata)
        pts: list[int | None] = []
        dts: list[int | None] = []
        keyframe: list[bool] = []
        position: list[int | None] = []
        size: list[int] = []
        duration: list[int] = []
        random_access: list[int] = []
        rejected = 0
        extents = _Extents()
        try:
            for packet in extents.packets(container):
                if packet.stream.index != stream.index:
                    continue
                flagged = packet.is_keyframe
                data = bytes(packet) if codec in ("h264", "hevc") and (flagged or len(random_access) == 0) else b""
                rap = is_random_access_point(codec, data, length_size, flagged) if data or flagged else False
                if packet.is_corrupt:
                    rap = False
                pts.append(packet.pts)
                dts.append(packet.dts)
                keyframe.append(flagged)
                position.append(packet.pos if packet.pos is not None and packet.pos >= 0 else None)
                size.append(packet.size)
                duration.append(packet.duration or 0)
                if rap and packet.pts is not None:
                    random_access.append(packet.pts)
                elif flagged:
                    rejected += 1
        except av.FFmpegError as e:
            if not pts:
                raise InvalidMediaError(f"video packets cannot be read: {e.strerror or e}") from e
        time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        video_index = stream.index
    finally:
        container.close()
    if not pts:
        raise InvalidMediaError("the video stream has no packets")
    if not random_access:
        raise InvalidMediaError("the video stream has no keyframe to start decoding from")
    return KeyframeIndex(
        stream_index=video_index,
        time_base=time_base,
        pts=tuple(pts),
        dts=tuple(dts),
        keyframe=tuple(keyframe),
        position=tuple(position),
        size=tuple(size),
        duration=tuple(duration),
        random_access_pts=tuple(sorted(set(random_access))),
        rejected_keyframes=rejected,
        extents=extents.result(),
    )


@dataclass
class _Extent:
    kind: str
    time_base: Fraction | None
    packets: int = 0
    start: int | None = None  # in time_base ticks
    end: int | None = None
    last_corrupt: bool = False


class _Extents:
    """Accumulates :class:`StreamExtent` per stream from demuxed packets."""

    def __init__(self) -> None:
        self.streams: dict[int, _Extent] = {}

    def packets(self, container: av.container.InputContainer) -> Iterator[av.Packet]:
        """Every packet of ``container`` (the demuxer's flush markers left out), each counted on its way."""
        for packet in container.demux():
            if packet.size == 0 and packet.pts is None and packet.dts is None:
                continue  # demuxer flush marker
            self._add(packet)
            yield packet

    def _add(self, packet: av.Packet) -> None:
        stream = packet.stream
        extent = self.streams.get(stream.index)
        if extent is None:
            extent = self.streams[stream.index] = _Extent(
                stream.type, Fraction(stream.time_base) if stream.time_base else None)
        if packet.size <= 0:
            return
        extent.packets += 1
        extent.last_corrupt = bool(packet.is_corrupt)
        if packet.pts is not None and extent.time_base is not None:
            end = packet.pts + max(packet.duration or 0, 0)
            extent.start = packet.pts if extent.start is None else min(extent.start, packet.pts)
            extent.end = end if extent.end is None else max(extent.end, end)

    def result(self) -> tuple[StreamExtent, ...]:
        return tuple(
            StreamExtent(index=index, kind=extent.kind, packets=extent.packets,
                         start_seconds=None if extent.start is None or extent.time_base is None
                         else extent.start * extent.time_base,
                         end_seconds=None if extent.end is None or extent.time_base is None
                         else extent.end * extent.time_base,
                         last_corrupt=extent.last_corrupt)
            for index, extent in sorted(self.streams.items()))


def scan_streams(path: str) -> tuple[StreamExtent, ...]:
    """Demux every packet of ``path`` (no decoding) and return each stream's extent (for audio-only input,
    which has no keyframe index)."""
    container = open_input(path)
    extents = _Extents()
    try:
        try:
            for _ in extents.packets(container):
                pass
        except av.FFmpegError as e:
            if not extents.streams:
                raise InvalidMediaError(f"the file's packets cannot be read: {e.strerror or e}") from e
    finally:
        container.close()
    return extents.result()
