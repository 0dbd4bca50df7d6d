"""CMAF fragments made from encoded packets, for LL-HLS parts: one ``moof``+``mdat`` per part, written here
rather than by FFmpeg's muxers, whose fragment boundaries PyAV cannot ask for (``frag_custom`` flushes on a
``NULL`` packet PyAV never sends; ``frag_duration`` counts from the previous cut, not on the stream's grid).

The init segment (``ftyp``+``moov`` with ``mvex``) is FFmpeg's: its mp4 muxer writes the sample entry (``avcC``
from the encoder's parameter sets, ``esds`` from the AAC configuration) with ``empty_moov``; the timescale and
track id are read back from it so the fragments written here match. A fragment is ISO/IEC 14496-12's minimum:
``mfhd``, and a ``traf`` of ``tfhd`` (``default-base-is-moof``), ``tfdt`` (64-bit base decode time) and one
``trun`` carrying every sample's duration, size, flags and composition offset. Fragments of one segment
concatenate into the segment itself, byte for byte.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av

from kinoray.logs import native_output_to_logging
from kinoray.media.package import add_packet_stream
from kinoray.media.packets import StreamParameters

__all__ = ["InitSegment", "Sample", "annexb_to_lengths", "fragment", "init_segment", "iter_boxes", "nal_units", "ticks"]

_SYNC_FLAGS = 0x02000000  # sample_depends_on = 2 (an I picture), sample_is_non_sync_sample = 0
_NON_SYNC_FLAGS = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample = 1
#: trun: data-offset, sample-duration, sample-size, sample-flags and sample-composition-time-offset present
_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800
_DEFAULT_BASE_IS_MOOF = 0x020000
_START_CODE_3 = b"\x00\x00\x01"
_AUD = 9  # an access unit delimiter: not carried in MP4 samples


@dataclass
class Sample:
    """One access unit: ``data`` as MP4 stores it (length-prefixed NAL units for H.264, raw AAC),
    ``dts`` and ``duration`` in the track's timescale, ``cts`` = pts − dts."""

    data: bytes
    dts: int
    duration: int = 0
    cts: int = 0
    sync: bool = True


@dataclass(frozen=True)
class InitSegment:
    data: bytes
    timescale: int
    track_id: int


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def iter_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, box end)`` of each box in ``data[start:end]`` (32- and 64-bit sizes).

    Raises:
        ValueError: a box runs past the end.
    """
    end = len(data) if end is None else end
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, position + 8)
            header = 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise ValueError(f"box {kind!r} at {position} runs past the end")
        yield kind, position + header, position + size
        position += size


def _child(data: bytes, start: int, end: int, *path: bytes) -> tuple[int, int]:
    for kind in path:
        for found, payload, box_end in iter_boxes(data, start, end):
            if found == kind:
                start, end = payload, box_end
                break
        else:
            raise ValueError(f"no {kind!r} box")
    return start, end


def init_segment(params: StreamParameters) -> InitSegment:
    """The CMAF header of one track described by ``params`` (FFmpeg's mp4 muxer, ``empty_moov``)."""
    buffer = io.BytesIO()
    with native_output_to_logging():
        container = av.open(buffer, "w", format="mp4",
                            options={"movflags": "empty_moov+default_base_moof+frag_custom+cmaf"})
        add_packet_stream(container, params)
        container.start_encoding()
        container.close()
    header = _header_boxes(buffer.getvalue())
    start, end = _child(header, 0, len(header), b"moov", b"trak")
    tkhd_start, _ = _child(header, start, end, b"tkhd")
    version = header[tkhd_start]
    (track_id,) = struct.unpack_from(">I", header, tkhd_start + (20 if version == 1 else 12))
    mdhd_start, _ = _child(header, start, end, b"mdia", b"mdhd")
    version = header[mdhd_start]
    (timescale,) = struct.unpack_from(">I", header, mdhd_start + (20 if version == 1 else 12))
    return InitSegment(header, timescale, track_id)


def _header_boxes(data: bytes) -> bytes:
    """``ftyp`` and ``moov`` of what the muxer wrote (its trailer's ``mfra`` left out)."""
    out = b""
    position = 0
    for kind, _, end in iter_boxes(data):
        if kind in (b"ftyp", b"moov"):
            out += data[position:end]
        position = end
    return out


def fragment(sequence: int, track_id: int, samples: list[Sample]) -> bytes:
    """One ``moof``+``mdat`` holding ``samples`` (decode order, durations set)."""
    if not samples:
        raise ValueError("a fragment needs at least one sample")
    entries = b"".join(struct.pack(">IIIi", sample.duration, len(sample.data),
                                   _SYNC_FLAGS if sample.sync else _NON_SYNC_FLAGS, sample.cts)
                       for sample in samples)

    def moof(data_offset: int) -> bytes:
        trun = _full_box(b"trun", 1, _TRUN_FLAGS, struct.pack(">Ii", len(samples), data_offset), entries)
        traf = _box(b"traf", _full_box(b"tfhd", 0, _DEFAULT_BASE_IS_MOOF, struct.pack(">I", track_id)),
                    _full_box(b"tfdt", 1, 0, struct.pack(">Q", samples[0].dts)), trun)
        return _box(b"moof", _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), traf)

    header = moof(0)
    return moof(len(header) + 8) + _box(b"mdat", *(sample.data for sample in samples))


def annexb_to_lengths(data: bytes) -> bytes:
    """An H.264/HEVC access unit in Annex B (start codes, what the encoders emit) as MP4 stores it: each NAL
    unit behind its 4-byte length; access unit delimiters are dropped. Already length-prefixed data (no start
    code at the front) is returned unchanged."""
    if not (data.startswith(_START_CODE_3) or data.startswith(b"\x00" + _START_CODE_3)):
        return data
    out = bytearray()
    for unit in nal_units(data):
        if unit and unit[0] & 0x1F != _AUD:
            out += struct.pack(">I", len(unit)) + unit
    return bytes(out)


def nal_units(data: bytes) -> Iterator[bytes]:
    """The NAL units of Annex B data (start codes of 3 or 4 bytes), without their start codes."""
    position = data.find(_START_CODE_3)
    while position >= 0:
        start = position + 3
        following = data.find(_START_CODE_3, start)
        end = len(data) if following < 0 else following
        unit = data[start:end]
        if following >= 0 and unit.endswith(b"\x00"):  # the next start code was 4 bytes long
            unit = unit.rstrip(b"\x00")
        yield unit
        position = following


def ticks(seconds: Fraction, timescale: int) -> int:
    """``seconds`` in a track's ``timescale``, rounded."""
    return round(seconds * timescale)
