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

from collections.abc import Iterable, Iterator
from typing import IO

from kinoray.errors import InvalidMediaError
from kinoray.media.flv import SCRIPT, FlvTag, read_header, read_tags

__all__ = ["join_flv"]


def join_flv(parts: Iterable[IO[bytes]]) -> Iterator[bytes]:
    """The bytes of one FLV holding every part's tags in order (see the module docstring). A part cut inside
    a tag (a publisher that dropped mid-write) ends at its last whole tag.

    Raises:
        InvalidMediaError: a part does not start with an FLV header.
    """
    offset = 0  # added to every tag's timestamp of the current part
    last = -1  # the last timestamp written
    for index, source in enumerate(parts):
        try:
            header = read_header(source)
        except InvalidMediaError:
            raise InvalidMediaError(f"recording part {index} is not FLV") from None
        if index == 0:
            yield header
        offset = last + 1
        try:
            for tag in read_tags(source):
                if tag.kind == SCRIPT:
                    continue
                timestamp = tag.timestamp + offset
                last = max(last, timestamp)
                yield FlvTag(tag.kind, timestamp & 0xFFFFFFFF, tag.body).to_bytes()
        except InvalidMediaError:
            continue  # a torn last tag: the part ends before it
