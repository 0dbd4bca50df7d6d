"""Joining the FLV recordings of one live session's publishers (one per connection, in order) into one FLV.

A publisher that reconnects within the reconnect window starts a new FLV whose timestamps start again near 0.
Concatenating the bytes would put a second file header mid-stream and move time backwards; instead each later
part's tags are appended after the earlier parts', their timestamps moved to continue one millisecond after
the last tag so far, and the later parts' file headers dropped. Script data (``onMetaData``) is dropped from
every part: its duration is one part's, and demuxers would believe it; the codecs are described by the
sequence headers. Sequence headers (codec configuration) stay: a reconnected encoder may change them. Read
piece by piece: memory is bounded by one tag (at most 16 MiB).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import IO

from kinoray.errors import InvalidMediaError

__all__ = ["join_flv"]

_SIGNATURE = b"FLV"
_TAG_HEADER = 11
_SCRIPT = 18


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


def join_flv(parts: Iterable[IO[bytes]]) -> Iterator[bytes]:
    """The bytes of one FLV holding every part's tags in order (see the module docstring). A part cut inside
    a tag (a publisher that dropped mid-write) ends at its last whole tag.

    Raises:
        InvalidMediaError: a part does not start with an FLV header.
    """
    offset = 0  # added to every tag's timestamp of the current part
    last = -1  # the last timestamp written
    for index, source in enumerate(parts):
        header = _read_exactly(source, 9)
        if header is None or header[:3] != _SIGNATURE:
            raise InvalidMediaError(f"recording part {index} is not FLV")
        data_offset = struct.unpack(">I", header[5:9])[0]
        extra = _read_exactly(source, max(0, data_offset - 9) + 4) or b""  # rest of the header, PreviousTagSize0
        if index == 0:
            yield header + extra
        offset = last + 1
        while True:
            try:
                tag = _read_exactly(source, _TAG_HEADER)
                if tag is None:
                    break
                size = int.from_bytes(tag[1:4], "big")
                body = _read_exactly(source, size + 4) if size + 4 else b""
            except InvalidMediaError:
                break  # a torn last tag: the part ends before it
            if body is None:
                break
            kind = tag[0] & 0x1F
            if kind == _SCRIPT:
                continue
            timestamp = (int.from_bytes(tag[4:7], "big") | tag[7] << 24) + offset
            last = max(last, timestamp)
            timestamp &= 0xFFFFFFFF
            yield (tag[:4] + (timestamp & 0xFFFFFF).to_bytes(3, "big") + bytes([timestamp >> 24]) + tag[8:]
                   + body)
