"""Fragmented-MP4 (CMAF) media segments read and moved in time without touching their samples: what a live
recording needs to reuse the live ladder's segments as a VOD asset's (:mod:`kinoray.live.recording`).

A segment is ``[styp] [sidx] (moof mdat)+`` as FFmpeg's HLS muxer or kinoray's LL-HLS packager writes it. Its
timing is read from the boxes (ISO/IEC 14496-12): each ``traf``'s ``tfdt`` (base decode time) and the sample
durations of its ``trun`` (else ``tfhd``'s default, else the init segment's ``trex``). :func:`shift_segment`
adds a constant to every ``tfdt`` and to ``sidx``'s earliest presentation time, so segments of several encoder
runs (each starting at 0) form one continuous timeline. Cost: one pass over the box headers, no sample copied
but the segment's bytes once.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass
from typing import Any

import av

from kinoray.errors import InvalidMediaError
from kinoray.live.cmaf import iter_boxes
from kinoray.logs import native_output_to_logging
from kinoray.media.codecs import codec_string

__all__ = ["FragmentTiming", "TrackHeader", "read_init", "segment_timing", "shift_segment"]

_TFHD_BASE_OFFSET, _TFHD_DESCRIPTION, _TFHD_DURATION = 0x01, 0x02, 0x08
_TRUN_DATA_OFFSET, _TRUN_FIRST_FLAGS, _TRUN_DURATION = 0x001, 0x004, 0x100
_TRUN_SIZE, _TRUN_FLAGS, _TRUN_CTO = 0x200, 0x400, 0x800


@dataclass(frozen=True)
class TrackHeader:
    """What a track's init segment says: its codec, RFC 6381 codec string, timescale, picture or audio facts
    and the ``trex`` default sample duration (0 when it has none). ``identity``: a digest of what decoding
    depends on (the sample description, ``stsd``, and the timescale), not of the whole init: two encoder runs
    of one format write equal identities even where their edit lists or creation times differ."""

    kind: str  # "video" | "audio"
    codec: str
    codec_string: str
    timescale: int
    default_duration: int
    identity: str
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0


@dataclass(frozen=True)
class FragmentTiming:
    """A segment's decode start and duration in its track's timescale, and how many samples it holds."""

    start: int
    duration: int
    samples: int


def _find(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for found, payload, box_end in iter_boxes(data, start, end):
        if found == kind:
            return payload, box_end
    return None


def read_init(init: bytes) -> TrackHeader:
    """The :class:`TrackHeader` of an init segment (``ftyp`` + ``moov``), its codec read through FFmpeg.

    Raises:
        InvalidMediaError: not an init segment of one audio or video track FFmpeg reads.
    """
    try:
        with native_output_to_logging(), av.open(io.BytesIO(init), "r", format="mp4") as container:
            stream = container.streams[0]
            context: Any = stream.codec_context
            kind = stream.type
            extradata = bytes(context.extradata or b"")
            if kind == "video":
                facts = {"width": context.width, "height": context.height}
            else:
                facts = {"sample_rate": context.sample_rate, "channels": context.channels}
            codec = context.name
        moov = _find(init, 0, len(init), b"moov")
        if moov is None:
            raise ValueError("no moov box")
        timescale = _timescale(init, *moov)
        identity = hashlib.sha256(_stsd(init, *moov) + timescale.to_bytes(8, "big")).hexdigest()
        default = 0
        mvex = _find(init, moov[0], moov[1], b"mvex")
        trex = _find(init, mvex[0], mvex[1], b"trex") if mvex is not None else None
        if trex is not None:
            # version+flags, track_ID, default_sample_description_index, default_sample_duration
            (default,) = struct.unpack_from(">I", init, trex[0] + 12)
    except (av.FFmpegError, ValueError, IndexError, struct.error) as error:
        raise InvalidMediaError(f"not a CMAF init segment kinoray can read: {error}") from error
    if kind not in ("video", "audio"):
        raise InvalidMediaError(f"a CMAF track of type {kind!r}")
    return TrackHeader(kind=kind, codec=codec, codec_string=codec_string(codec, extradata), timescale=timescale,
                       default_duration=default, identity=identity, **facts)


def _timescale(data: bytes, start: int, end: int) -> int:
    trak = _find(data, start, end, b"trak")
    mdia = _find(data, *trak, b"mdia") if trak else None
    mdhd = _find(data, *mdia, b"mdhd") if mdia else None
    if mdhd is None:
        raise ValueError("no trak/mdia/mdhd box")
    version = data[mdhd[0]]
    (timescale,) = struct.unpack_from(">I", data, mdhd[0] + (20 if version == 1 else 12))
    if timescale <= 0:
        raise ValueError("a track timescale of 0")
    return int(timescale)


def _stsd(data: bytes, start: int, end: int) -> bytes:
    box: tuple[int, int] | None = (start, end)
    for kind in (b"trak", b"mdia", b"minf", b"stbl", b"stsd"):
        box = _find(data, *box, kind) if box is not None else None
    if box is None:
        raise ValueError("no trak/mdia/minf/stbl/stsd box")
    return data[box[0]:box[1]]


def _trafs(data: bytes) -> list[tuple[int, int]]:
    trafs = []
    for kind, payload, end in iter_boxes(data):
        if kind == b"moof":
            trafs += [(start, stop) for found, start, stop in iter_boxes(data, payload, end) if found == b"traf"]
    return trafs


def _tfdt(data: bytes, start: int, end: int) -> tuple[int, int, int]:
    """``(value, offset of the value, its width in bytes)`` of the traf's ``tfdt``."""
    box = _find(data, start, end, b"tfdt")
    if box is None:
        raise ValueError("a track fragment without tfdt")
    width = 8 if data[box[0]] == 1 else 4
    (value,) = struct.unpack_from(">Q" if width == 8 else ">I", data, box[0] + 4)
    return value, box[0] + 4, width


def _traf_samples(data: bytes, start: int, end: int, default_duration: int) -> tuple[int, int]:
    """``(sum of the sample durations, sample count)`` of one ``traf``."""
    tfhd = _find(data, start, end, b"tfhd")
    if tfhd is None:
        raise ValueError("a track fragment without tfhd")
    (flags,) = struct.unpack_from(">I", data, tfhd[0])
    position = tfhd[0] + 8  # version+flags, track_ID
    position += 8 if flags & _TFHD_BASE_OFFSET else 0
    position += 4 if flags & _TFHD_DESCRIPTION else 0
    if flags & _TFHD_DURATION:
        (default_duration,) = struct.unpack_from(">I", data, position)
    total = count = 0
    for kind, payload, _ in iter_boxes(data, start, end):
        if kind != b"trun":
            continue
        (trun_flags,) = struct.unpack_from(">I", data, payload)
        (samples,) = struct.unpack_from(">I", data, payload + 4)
        position = payload + 8 + (4 if trun_flags & _TRUN_DATA_OFFSET else 0) + \
            (4 if trun_flags & _TRUN_FIRST_FLAGS else 0)
        stride = 4 * sum(1 for bit in (_TRUN_DURATION, _TRUN_SIZE, _TRUN_FLAGS, _TRUN_CTO) if trun_flags & bit)
        if trun_flags & _TRUN_DURATION:
            total += sum(struct.unpack_from(">I", data, position + i * stride)[0] for i in range(samples))
        else:
            total += default_duration * samples
        count += samples
    return total, count


def segment_timing(segment: bytes, default_duration: int = 0) -> FragmentTiming:
    """The decode start, duration and sample count of a media segment (``default_duration``: the init's
    ``trex`` default, :attr:`TrackHeader.default_duration`).

    Raises:
        InvalidMediaError: not a media segment (no ``moof`` with a ``tfdt``).
    """
    try:
        trafs = _trafs(segment)
        if not trafs:
            raise ValueError("no moof/traf box")
        start = end = None
        samples = 0
        for traf in trafs:
            base = _tfdt(segment, *traf)[0]
            duration, count = _traf_samples(segment, *traf, default_duration)
            start = base if start is None else min(start, base)
            end = base + duration if end is None else max(end, base + duration)
            samples += count
    except (ValueError, struct.error) as error:
        raise InvalidMediaError(f"not a CMAF media segment: {error}") from error
    assert start is not None and end is not None
    return FragmentTiming(start, end - start, samples)


def shift_segment(segment: bytes, delta: int, timescale: int) -> bytes:
    """``segment`` with ``delta`` (ticks of the track's ``timescale``, may be negative) added to every ``tfdt``
    and to the ``sidx`` earliest presentation time (in the sidx's own timescale).

    Raises:
        InvalidMediaError: not a media segment, or a time that would fall below 0 or past its field's width.
    """
    if delta == 0:
        return segment
    data = bytearray(segment)
    try:
        for traf in _trafs(segment):
            value, offset, width = _tfdt(segment, *traf)
            _put(data, offset, width, value + delta)
        for kind, payload, _ in iter_boxes(segment):
            if kind == b"sidx":
                version = segment[payload]
                width = 8 if version == 1 else 4
                offset = payload + 12  # version+flags, reference_ID, timescale
                (reference_scale,) = struct.unpack_from(">I", segment, payload + 8)
                (value,) = struct.unpack_from(">Q" if width == 8 else ">I", segment, offset)
                _put(data, offset, width, value + delta * (reference_scale or timescale) // timescale)
    except (ValueError, struct.error) as error:
        raise InvalidMediaError(f"not a CMAF media segment: {error}") from error
    return bytes(data)


def _put(data: bytearray, offset: int, width: int, value: int) -> None:
    if not 0 <= value < 1 << (8 * width):
        raise ValueError(f"a shifted time {value} does not fit its {width}-byte field")
    struct.pack_into(">Q" if width == 8 else ">I", data, offset, value)
