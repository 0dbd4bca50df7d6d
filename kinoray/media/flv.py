"""FLV tags (Adobe's FLV file format, version 10), written and read in one place: the live ingest writes a
publisher's RTMP messages back as an FLV stream (what FFmpeg's FLV demuxer reads through PyAV, and what a live
recording stores), RTMP aggregate messages and recordings are read back tag by tag (:func:`read_tags`).
The tags' bodies are the RTMP messages' payloads unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from kinoray.errors import InvalidMediaError

__all__ = ["AUDIO", "SCRIPT", "VIDEO", "FlvTag", "flv_header", "read_header", "read_tags"]

AUDIO, VIDEO, SCRIPT = 8, 9, 18


@dataclass(frozen=True, slots=True)
class FlvTag:
    """One tag: its type (:data:`AUDIO`, :data:`VIDEO`, :data:`SCRIPT`), its timestamp (ms, 32 bits, as RTMP
    counts) and its body."""

    kind: int
    timestamp: int
    body: bytes

    def __post_init__(self) -> None:
        if self.kind not in (AUDIO, VIDEO, SCRIPT):
            raise ValueError(f"FLV tag type {self.kind} is not audio, video or script data")
        if len(self.body) >= 1 << 24:
            raise ValueError("an FLV tag body is at most 16 MiB")

    @property
    def is_keyframe(self) -> bool:
        """A video tag whose frame type is 1 (a keyframe, for H.264 an IDR access unit or its sequence header)."""
        return self.kind == VIDEO and bool(self.body) and self.body[0] >> 4 == 1

    @property
    def is_header(self) -> bool:
        """Metadata, or a codec configuration record (AVC / HEVC (enhanced FLV) sequence header, AAC
        AudioSpecificConfig): what a decoder joining a stream mid-way needs before a keyframe."""
        if self.kind == SCRIPT:
            return True
        if self.kind == VIDEO and len(self.body) > 1:
            return self.body[0] & 0x0F in (7, 12) and self.body[1] == 0
        if self.kind == AUDIO and len(self.body) > 1:
            return self.body[0] >> 4 == 10 and self.body[1] == 0
        return False

    def to_bytes(self) -> bytes:
        """The tag followed by its PreviousTagSize field."""
        timestamp = self.timestamp & 0xFFFFFFFF
        header = struct.pack(">B", self.kind) + len(self.body).to_bytes(3, "big") \
            + (timestamp & 0xFFFFFF).to_bytes(3, "big") + bytes([timestamp >> 24]) + b"\x00\x00\x00"
        return header + self.body + struct.pack(">I", 11 + len(self.body))


def flv_header(*, audio: bool = True, video: bool = True) -> bytes:
    """The 9-byte FLV header and the first PreviousTagSize (0)."""
    flags = (0x04 if audio else 0) | (0x01 if video else 0)
    return b"FLV\x01" + bytes([flags]) + struct.pack(">I", 9) + struct.pack(">I", 0)


def _read_exactly(source: IO[bytes], count: int) -> bytes | None:
    """``count`` bytes, ``None`` at a clean end (nothing read), ``InvalidMediaError`` for a short read."""
    data = source.read(count)
    if not data:
        return None
    while len(data) < count:
        more = source.read(count - len(data))
        if not more:
            raise InvalidMediaError(f"FLV ends inside a tag ({len(data)} of {count} bytes)")
        data += more
    return data


def read_header(source: IO[bytes]) -> bytes:
    """The file header with the first PreviousTagSize, checked; ``InvalidMediaError`` if it is not FLV."""
    header = _read_exactly(source, 9)
    if header is None or header[:3] != b"FLV":
        raise InvalidMediaError("not FLV: no FLV signature")
    data_offset = struct.unpack(">I", header[5:9])[0]
    return header + (_read_exactly(source, max(0, data_offset - 9) + 4) or b"")


def read_tags(source: IO[bytes], *, trailing_size: bool = True) -> Iterator[FlvTag]:
    """The tags of ``source`` (positioned after the header), in order; tag types other than audio, video and
    script data are skipped. ``trailing_size``: each tag is followed by its PreviousTagSize (a file; RTMP
    aggregate messages have one too). Memory is bounded by one tag (at most 16 MiB).

    Raises:
        InvalidMediaError: the data ends inside a tag.
    """
    while (head := _read_exactly(source, 11)) is not None:
        size = int.from_bytes(head[1:4], "big")
        body = _read_exactly(source, size + (4 if trailing_size else 0)) or b""
        if len(body) < size:
            raise InvalidMediaError(f"FLV ends inside a tag ({len(body)} of {size} bytes)")
        kind = head[0] & 0x1F
        if kind in (AUDIO, VIDEO, SCRIPT):
            yield FlvTag(kind, int.from_bytes(head[4:7], "big") | head[7] << 24, body[:size])
