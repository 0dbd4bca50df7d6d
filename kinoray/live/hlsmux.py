"""FFmpeg's HLS muxer for ``reduced``/``standard`` latency, with the media playlist kinoray publishes made from
the muxer's own.

FFmpeg writes its playlist (``muxer.m3u8``, never served; a replaced transcoder's muxer starts from the published
one) and its fMP4 segments; after every packet muxed, :class:`HlsOutput` sees whether that playlist changed and,
if it did, writes ``index.m3u8`` from it with two things FFmpeg cannot get right:

- ``EXT-X-PROGRAM-DATE-TIME``: FFmpeg dates segments from the wall clock when the muxer started plus the
  ``EXTINF`` durations before them, i.e. late by however long the stream took to reach the muxer (decode, the
  encoder's first packet: more than a second) and drifting with every duration it rounds. Here each segment is
  dated by its first packet's media time on the publisher's clock (``anchor``: the wall time of media time 0,
  what the LL-HLS packager uses too). The muxer lists a segment when the packet that starts the next one
  arrives, so the packet muxed just before a listing started the segment after it: exact, with no parsing of
  the segments.
- ``EXT-X-MAP`` per transcoder run: a replaced transcoder (``resume``) writes its init segment under a name of
  its own (:func:`~kinoray.live.llhls.next_init_name`) — its encoder, or a passthrough decided differently, may
  make another one — and its segments, after FFmpeg's ``EXT-X-DISCONTINUITY``, get an ``EXT-X-MAP`` naming it,
  while the earlier segments still in the window keep the init they were made with. FFmpeg alone would list one
  map for all, overwritten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from kinoray.live.llhls import INIT, PlaylistState, format_date_time, next_init_name, write_atomically

__all__ = ["MUXER_PLAYLIST", "PLAYLIST", "HlsOutput"]

log = logging.getLogger(__name__)

PLAYLIST = "index.m3u8"
#: The muxer's own playlist, beside the published one.
MUXER_PLAYLIST = "muxer.m3u8"


class HlsOutput:
    """One media playlist of FFmpeg's HLS muxer in ``directory`` (see the module docstring): ``options`` are
    the muxer's (``hls_time`` …); ``resume`` appends to a replaced transcoder's list after a discontinuity;
    ``anchor()``: the wall clock (Unix seconds) of media time 0, asked once, at the first packet (``None``:
    unknown, the first packet is dated now)."""

    def __init__(self, directory: Path, options: dict[str, str], flags: str, *, resume: bool,
                 anchor: Callable[[], float | None]) -> None:
        self.directory, self.anchor_source = Path(directory), anchor
        self.private, self.public = self.directory / MUXER_PLAYLIST, self.directory / PLAYLIST
        self._dates: dict[str, float] = {}  # segment URI -> EXT-X-PROGRAM-DATE-TIME (Unix seconds)
        self._maps: dict[str, str] = {}  # segment URI -> its init segment
        self.init_name = INIT
        published = self._inherit() if resume else None
        if published is not None:
            flags += "+append_list+discont_start"
            self.init_name = next_init_name([INIT, *self._maps.values()])
            # the muxer goes on from what viewers were shown: its own list may be older (the S3 mirror uploads
            # the two playlists one after the other, and the transcoder that wrote them may die between)
            write_atomically(self.private, published)
        self.container = av.open(str(self.private), "w", format="hls", options={
            **options, "hls_fmp4_init_filename": self.init_name, "hls_flags": flags})
        self._version = self._stat()
        self._anchor: float | None = None
        self._open_start: Fraction | None = None  # media time of the open segment's first packet

    def _inherit(self) -> str | None:
        """The playlist a replaced transcoder published, the dates and inits of its segments noted; ``None``
        where there is none to go on from (the list starts again)."""
        try:
            text = self.public.read_text()
            state = PlaylistState.parse(text)
        except FileNotFoundError:
            return None
        except (UnicodeDecodeError, ValueError) as error:
            log.warning("live playlist to resume not readable; starting again",
                        extra={"playlist": str(self.public), "error": str(error)})
            return None
        for segment in state.segments:
            uri = state.lines[segment.uri_line]
            self._maps[uri] = segment.map_uri
            if segment.program_date_time:
                self._dates[uri] = datetime.fromisoformat(segment.program_date_time.replace("Z", "+00:00")).timestamp()
        return text

    def mux(self, packet: Any) -> None:
        """Mux ``packet`` (its stream and time base set); publish the playlist if the muxer listed a segment."""
        when = packet.pts * packet.time_base if packet.pts is not None else None
        if self._anchor is None and when is not None:
            anchor = self.anchor_source()
            self._anchor = anchor if anchor is not None else time.time() - float(when)
        if self._open_start is None:
            self._open_start = when
        # the muxer cuts a segment (and rewrites its playlist) only at a packet flagged key: look only then
        cuts = packet.is_keyframe
        self.container.mux(packet)
        if cuts and self._stat() != self._version and self._publish() and when is not None:
            self._open_start = when  # this packet started the segment the muxer opened

    def close(self) -> None:
        """The muxer's trailer (the last segment, ``EXT-X-ENDLIST``), then the published playlist."""
        self.container.close()
        self._publish()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = self.private.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _publish(self) -> bool:
        """``index.m3u8`` from the muxer's playlist; whether it listed segments not seen before."""
        self._version = self._stat()
        try:
            text = self.private.read_text()
        except FileNotFoundError:
            return False
        head: list[str] = []
        segments: list[tuple[list[str], str]] = []
        tags: list[str] = []
        tail: list[str] = []
        mapped = False  # the muxer writes its one EXT-X-MAP just before the first segment's tags
        for line in (line.strip() for line in text.splitlines()):
            if not line or line.startswith(("#EXT-X-MAP:", "#EXT-X-PROGRAM-DATE-TIME:")):
                mapped = mapped or line.startswith("#EXT-X-MAP:")
                continue  # both written below, per segment
            if line == "#EXT-X-ENDLIST":
                tail.append(line)
            elif line.startswith("#EXTINF:") or line == "#EXT-X-DISCONTINUITY" and (mapped or segments):
                tags.append(line)
            elif line == "#EXT-X-DISCONTINUITY":
                # append_list+discont_start writes one in the header, meant for the first segment it adds (which
                # gets its own after the listed ones)
                continue
            elif line.startswith("#"):
                (tags if tags else head).append(line)
            else:
                segments.append((tags, line))
                tags = []
        new = False
        previous: tuple[float, float] | None = None  # the last segment's date and duration
        for segment_tags, uri in segments:
            duration = next((float(tag[8:].split(",")[0]) for tag in segment_tags if tag.startswith("#EXTINF:")), 0.0)
            if uri not in self._maps:
                new = True
                self._maps[uri] = self.init_name
                if self._open_start is not None and self._anchor is not None:
                    self._dates[uri] = self._anchor + float(self._open_start)
                    self._open_start = None  # a second new segment at once (the trailer): dated after this one
                elif previous is not None:
                    self._dates[uri] = previous[0] + previous[1]
            if uri in self._dates:
                previous = self._dates[uri], duration
        listed = {uri for _, uri in segments}
        self._dates = {uri: date for uri, date in self._dates.items() if uri in listed}
        self._maps = {uri: init for uri, init in self._maps.items() if uri in listed}
        lines = list(head)
        in_force: str | None = None
        for segment_tags, uri in segments:
            init = self._maps.get(uri, INIT)
            discontinuity = [tag for tag in segment_tags if tag == "#EXT-X-DISCONTINUITY"]
            lines += discontinuity
            if init != in_force:
                lines.append(f'#EXT-X-MAP:URI="{init}"')
                in_force = init
            if uri in self._dates:
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_date_time(self._dates[uri])}")
            lines += [tag for tag in segment_tags if tag != "#EXT-X-DISCONTINUITY"]
            lines.append(uri)
        write_atomically(self.public, "\n".join([*lines, *tail]) + "\n")
        return new
