"""Low-Latency HLS (RFC 8216bis, Apple's LL-HLS): the packager that writes a ``low`` latency stream's parts,
segments and playlists, and the playlist logic the delivery edge needs (blocking reloads, delta updates).

**Packaging.** Every media playlist (a video rung, the audio) is a :class:`PartTrack`. Samples are pushed in
decode order; a :class:`PartGrid` cuts them on one time grid shared by all tracks (parts of ``part`` seconds,
``parts_per_segment`` parts to a segment, the grid counted from the stream's first frame), so every rung's parts
and segments start at the same instant and the transcoder forces an IDR on the frame that starts each segment.
A passed-through source (:mod:`kinoray.live.passthrough`) uses a :class:`KeyframeGrid` instead: segments start
where the transcoder announces the source's IDRs, parts are cut on the part grid restarted at each segment's
start, and only a segment's first part needs to start with an IDR.
A part is one CMAF fragment (:mod:`kinoray.live.cmaf`) in ``part_MMMMM.K.m4s``; when a segment's last part is
written, the segment ``seg_MMMMM.m4s`` is those parts' bytes, concatenated. Files are written under a
temporary name and renamed, media before any playlist that lists it. A sample's duration is known when the
next one arrives, so a part is closed by the first sample of the next part.

Each media playlist (version 9) carries ``EXT-X-SERVER-CONTROL`` (``CAN-BLOCK-RELOAD=YES``, ``PART-HOLD-BACK`` =
3 part targets, ``CAN-SKIP-UNTIL`` = 6 target durations), ``EXT-X-PART-INF``, ``EXT-X-PROGRAM-DATE-TIME`` on every
segment (the wall clock of the stream's first frame plus the segment's media time), ``EXT-X-PART`` for the
segments of the last :data:`PART_SEGMENTS` target durations and the open one (``INDEPENDENT=YES`` on parts
that start with a sync sample), ``EXT-X-PRELOAD-HINT`` for the next part and ``EXT-X-RENDITION-REPORT`` for
every other media playlist of the stream. All playlists are rewritten whenever any track closes a part, so the
reports are current.

**Serving** (pure functions; :mod:`kinoray.edge.stream` does the HTTP): :class:`PlaylistState` reads what a
playlist holds; :class:`BlockingRequest` is the ``_HLS_msn``/``_HLS_part``/``_HLS_skip`` query, checked against
the state (met, not yet, or too far ahead: 400); :func:`delta_update` makes the ``EXT-X-SKIP`` playlist.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

from kinoray.errors import InvalidParametersError
from kinoray.live.cmaf import InitSegment, Sample, fragment

__all__ = [
    "INIT_PATTERN",
    "PART_SEGMENTS",
    "BlockingRequest",
    "KeyframeGrid",
    "PartGrid",
    "PartTrack",
    "PlaylistState",
    "delta_update",
    "format_date_time",
    "media_name",
    "next_init_name",
    "part_target_for",
    "part_name",
    "resumed_segments",
    "segment_name",
    "write_atomically",
]

log = logging.getLogger(__name__)

PLAYLIST = "index.m3u8"
INIT = "init.mp4"
#: An init segment's name: the first transcoder's ``init.mp4``, a replacement's ``init-<n>.mp4``.
INIT_PATTERN = re.compile(r"init(?:-(?P<run>[0-9]{1,6}))?\.mp4")
#: Parts are listed for the segments of this many target durations before the open one (RFC 8216bis: at least
#: the last three target durations).
PART_SEGMENTS = 3
#: Part files stay this many segments after their parts leave the playlist (a client that read an older
#: playlist may still ask for them).
_PART_FILE_GRACE = 3
#: Segments deleted this many segments after they leave the window (FFmpeg's ``hls_delete_threshold``).
_DELETE_THRESHOLD = 2
_VERSION = 9
_NAME = re.compile(r"(?:seg_(?P<segment>[0-9]{5,9})|part_(?P<msn>[0-9]{5,9})\.(?P<part>[0-9]{1,3}))\.m4s")


def segment_name(msn: int) -> str:
    return f"seg_{msn:05d}.m4s"


def part_name(msn: int, part: int) -> str:
    return f"part_{msn:05d}.{part}.m4s"


def media_name(name: str) -> tuple[int, int | None] | None:
    """``(msn, part)`` of a part file's name, ``(msn, None)`` of a segment's, ``None`` for anything else."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    if match["segment"] is not None:
        return int(match["segment"]), None
    return int(match["msn"]), int(match["part"])


def next_init_name(listed: Iterable[str]) -> str:
    """The init segment name of a transcoder that takes over a stream whose playlist names the inits
    ``listed``: one that none of them has (``init-<n>.mp4``, ``n`` one past the highest), so a replacement whose
    encoder configuration differs never overwrites the init that segments still in the window decode with."""
    runs = [int(match["run"] or 0) for name in listed if (match := INIT_PATTERN.fullmatch(name))]
    return f"init-{max(runs, default=0) + 1}.mp4"


def write_atomically(path: Path, data: bytes | str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        temporary.write_text(data)
    else:
        temporary.write_bytes(data)
    temporary.replace(path)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def format_date_time(when: float) -> str:
    moment = datetime.fromtimestamp(when, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- packaging ---------------------------------------------------------------------------------------------------


class PartGrid:
    """Where parts and segments start: every ``part`` seconds from 0, a segment every ``parts_per_segment``
    parts. :meth:`cut` is asked with each sample's time in order and says whether the sample starts a part
    (``1``), a segment (``2``) or neither (``0``). A sample up to ``tolerance`` before a grid point counts as on
    it (timestamps rounded to the millisecond by FLV)."""

    def __init__(self, part: Fraction, parts_per_segment: int, tolerance: Fraction) -> None:
        if part <= 0 or parts_per_segment < 1:
            raise ValueError("a part grid needs a positive part and at least one part per segment")
        self.part, self.parts_per_segment, self.tolerance = part, parts_per_segment, tolerance
        self._next = Fraction(0)
        self._index = 0  # the part that starts at self._next

    def on_line(self, when: Fraction) -> bool:
        """Whether ``when`` (just given to :meth:`cut`) is on the grid line it crossed, not past it."""
        return when - (self._next - self.part) <= self.tolerance

    def cut(self, when: Fraction) -> int:
        if when < self._next - self.tolerance:
            return 0
        segment = False
        while self._next - self.tolerance <= when:
            segment = segment or self._index % self.parts_per_segment == 0
            self._next += self.part
            self._index += 1
        return 2 if segment else 1


class KeyframeGrid:
    """Segments that start where the source's IDRs are — announced with :meth:`segment_at` before any sample at
    or after that time is pushed — and parts every ``part`` seconds from each segment's start (a passed-through
    top rung: :mod:`kinoray.live.passthrough`). The same questions as :class:`PartGrid`."""

    def __init__(self, part: Fraction, tolerance: Fraction) -> None:
        if part <= 0:
            raise ValueError("a part grid needs a positive part")
        self.part, self.tolerance = part, tolerance
        self._starts: deque[Fraction] = deque()
        self._line: Fraction | None = None  # the last grid line crossed
        self._next: Fraction | None = None  # the next part's line

    def segment_at(self, when: Fraction) -> None:
        self._starts.append(when)

    def on_line(self, when: Fraction) -> bool:
        return self._line is not None and when - self._line <= self.tolerance

    def cut(self, when: Fraction) -> int:
        if self._starts and self._starts[0] - self.tolerance <= when:
            while len(self._starts) > 1 and self._starts[1] - self.tolerance <= when:
                self._starts.popleft()  # a track with a gap (audio) skips the segment starts it has no sample in
            self._line = self._starts.popleft()
            self._next = self._line + self.part
            return 2
        if self._next is None or when < self._next - self.tolerance:
            return 0
        while self._next - self.tolerance <= when:
            self._line, self._next = self._next, self._next + self.part
        return 1


@dataclass
class _Part:
    index: int
    duration: float
    independent: bool
    data: bytes = b""


@dataclass
class _Segment:
    msn: int
    start: float  # wall clock of its first sample (EXT-X-PROGRAM-DATE-TIME)
    parts: list[_Part] = field(default_factory=list)
    duration: float = 0.0
    discontinuity: bool = False
    init: str = INIT  # the EXT-X-MAP it decodes with


@dataclass(frozen=True)
class TrackReport:
    """What ``EXT-X-RENDITION-REPORT`` says of a track: its last segment (or part's segment) and part."""

    name: str
    last_msn: int
    last_part: int | None


class PartTrack:
    """One LL-HLS media playlist and its files in ``directory`` (see the module docstring).

    ``anchor``: the wall clock (Unix seconds) of media time 0; ``part_target``: the longest part this track
    writes (the grid's part plus one sample), ``target_duration``: the playlist's ``EXT-X-TARGETDURATION``;
    ``first_msn``: the first segment's number (after a resumed stream's last); ``previous``: segments a resumed
    stream had already listed (:meth:`PlaylistState.parse` of its playlist); ``init_name``: the file its init
    segment is written to (a resumed stream's: :func:`next_init_name`), named by ``EXT-X-MAP`` for its segments."""

    def __init__(self, name: str, directory: Path, init: InitSegment, grid: PartGrid | KeyframeGrid, *,
                 anchor: float,
                 part_target: float, target_duration: int, window_segments: int,
                 max_sample_ticks: int, default_ticks: int, first_msn: int = 1,
                 previous: Sequence[_Segment] = (), discontinuity_sequence: int = 0,
                 init_name: str = INIT) -> None:
        self.name, self.directory, self.init, self.grid = name, Path(directory), init, grid
        self.init_name = init_name
        self.anchor, self.part_target, self.target_duration = anchor, part_target, target_duration
        self.window_segments = window_segments
        self.max_sample_ticks, self.default_ticks = max_sample_ticks, default_ticks
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(self.directory / init_name, init.data)
        self.segments: list[_Segment] = list(previous)
        self.discontinuity_sequence = discontinuity_sequence
        self._msn = first_msn
        self._open: _Segment | None = None
        self._samples: list[Sample] = []
        self._last: Sample | None = None
        self._fragments = 0
        self._discontinuity_pending = bool(previous)  # a resumed stream: its first new segment follows a gap
        self._deleted: list[int] = []
        self._parts_cleaned = self.segments[0].msn if self.segments else first_msn
        self.ended = False
        self.parts_written = 0

    # --- samples in ------------------------------------------------------------------------------------------

    def push(self, sample: Sample, when: Fraction) -> bool:
        """Add ``sample`` (its duration is set from the next one); ``when``: its presentation time in seconds
        from the stream's start, for the grid. Returns whether a part was closed (the playlists need writing)."""
        cut = self.grid.cut(when)
        if self._last is None and not self._samples and not (cut and self.grid.on_line(when)):
            # a track that starts between grid lines (audio a little after the first picture) starts at the
            # next line: a first part that short would break RFC 8216bis's 85 % rule
            return False
        if cut == 2 and not sample.sync:
            log.warning("a segment boundary without a sync sample; cut as a part", extra={"track": self.name})
            cut = 1
        closed = False
        if self._last is not None:
            gap = sample.dts - self._last.dts
            self._last.duration = gap if 0 < gap <= self.max_sample_ticks else self.default_ticks
            self._samples.append(self._last)
            if cut:
                closed = self._close_part(end_segment=cut == 2)
        self._last = sample
        return closed

    def finish(self) -> None:
        """The stream's end: the last sample, part and segment out; playlists get ``EXT-X-ENDLIST``."""
        if self._last is not None:
            self._last.duration = self.default_ticks
            self._samples.append(self._last)
            self._last = None
        if self._samples:
            self._close_part(end_segment=True)
        elif self._open is not None and self._open.parts:
            self._complete_segment()
        self.ended = True

    def _close_part(self, *, end_segment: bool) -> bool:
        if not self._samples:
            return False
        samples, self._samples = self._samples, []
        if self._open is None:  # dated by its first picture's presentation (B-frames: its dts is earlier)
            start = self.anchor + (samples[0].dts + samples[0].cts) / self.init.timescale
            self._open = _Segment(self._msn, start, discontinuity=self._discontinuity_pending, init=self.init_name)
            self._discontinuity_pending = False
        segment = self._open
        self._fragments += 1
        data = fragment(self._fragments, self.init.track_id, samples)
        duration = sum(sample.duration for sample in samples) / self.init.timescale
        part = _Part(len(segment.parts), duration, samples[0].sync, data)
        write_atomically(self.directory / part_name(segment.msn, part.index), data)
        segment.parts.append(part)
        segment.duration += duration
        self.parts_written += 1
        if end_segment:
            self._complete_segment()
        return True

    def _complete_segment(self) -> None:
        segment = self._open
        assert segment is not None
        if round(segment.duration) > self.target_duration:
            # only a passed-through source's keyframe interval can make a segment longer than planned
            log.warning("a segment longer than the target duration", extra={"track": self.name,
                                                                             "seconds": segment.duration})
            self.target_duration = round(segment.duration)
        write_atomically(self.directory / segment_name(segment.msn), b"".join(part.data for part in segment.parts))
        for part in segment.parts:
            part.data = b""  # written; kept only as durations from here
        self.segments.append(segment)
        self._open = None
        self._msn += 1
        self._expire()

    def _expire(self) -> None:
        while len(self.segments) > self.window_segments:
            gone = self.segments.pop(0)
            if gone.discontinuity:
                self.discontinuity_sequence += 1
            self._deleted.append(gone.msn)
        while len(self._deleted) > _DELETE_THRESHOLD:
            msn = self._deleted.pop(0)
            _remove(self.directory / segment_name(msn))
        # part files: once their parts left the playlist, plus a grace
        listed_from = self._msn - PART_SEGMENTS - _PART_FILE_GRACE
        for msn in range(self._parts_cleaned, max(self._parts_cleaned, listed_from)):
            for path in self.directory.glob(f"part_{msn:05d}.*.m4s"):
                _remove(path)
        self._parts_cleaned = max(self._parts_cleaned, listed_from)

    # --- what the playlists say ------------------------------------------------------------------------------

    def report(self) -> TrackReport:
        if self._open is not None and self._open.parts:
            return TrackReport(self.name, self._open.msn, len(self._open.parts) - 1)
        if self.segments:
            last = self.segments[-1]
            return TrackReport(self.name, last.msn, len(last.parts) - 1 if last.parts else None)
        return TrackReport(self.name, self._msn, None)

    def next_part(self) -> tuple[int, int]:
        if self._open is not None:
            return self._open.msn, len(self._open.parts)
        return self._msn, 0

    def playlist(self, reports: Sequence[TrackReport]) -> str:
        part_target = self.part_target
        first = self.segments[0].msn if self.segments else (self._open.msn if self._open else self._msn)
        lines = ["#EXTM3U", f"#EXT-X-VERSION:{_VERSION}", f"#EXT-X-TARGETDURATION:{self.target_duration}",
                 f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={6 * self.target_duration:.1f},"
                 f"PART-HOLD-BACK={3 * part_target:.3f}",
                 f"#EXT-X-PART-INF:PART-TARGET={part_target:.3f}",
                 f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        if self.discontinuity_sequence:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}")
        listed = [*self.segments, *([self._open] if self._open is not None and self._open.parts else [])]
        in_force = listed[0].init if listed else self.init_name
        lines.append(f'#EXT-X-MAP:URI="{in_force}"')
        with_parts = self._msn - PART_SEGMENTS
        for segment in listed:
            # a replaced transcoder's segments decode with its own init: a new EXT-X-MAP after the discontinuity
            lines += self._segment_lines(segment, parts=segment is self._open or segment.msn >= with_parts,
                                         new_map=segment.init != in_force)
            in_force = segment.init
            if segment is not self._open:
                lines += [f"#EXTINF:{segment.duration:.5f},", segment_name(segment.msn)]
        if not self.ended:
            msn, part = self.next_part()
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{part_name(msn, part)}"')
        for report in reports:
            if report.name == self.name:
                continue
            attributes = f'URI="../{report.name}/{PLAYLIST}",LAST-MSN={report.last_msn}'
            if report.last_part is not None:
                attributes += f",LAST-PART={report.last_part}"
            lines.append(f"#EXT-X-RENDITION-REPORT:{attributes}")
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def _segment_lines(self, segment: _Segment, *, parts: bool, new_map: bool = False) -> list[str]:
        lines = ["#EXT-X-DISCONTINUITY"] if segment.discontinuity else []
        if new_map:
            lines.append(f'#EXT-X-MAP:URI="{segment.init}"')
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_date_time(segment.start)}")
        if parts:
            for part in segment.parts:
                independent = ",INDEPENDENT=YES" if part.independent else ""
                lines.append(f'#EXT-X-PART:DURATION={part.duration:.5f},'
                             f'URI="{part_name(segment.msn, part.index)}"{independent}')
        return lines

    def write_playlist(self, reports: Sequence[TrackReport]) -> None:
        write_atomically(self.directory / PLAYLIST, self.playlist(reports))


# --- serving: what a playlist holds, blocking requests, delta updates ---------------------------------------------

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
#: Tags that belong to the segment after them (a playlist's body starts at the first of them).
_SEGMENT_TAGS = ("#EXTINF:", "#EXT-X-PART:", "#EXT-X-PROGRAM-DATE-TIME:", "#EXT-X-DATERANGE:", "#EXT-X-GAP",
                 "#EXT-X-BITRATE:", "#EXT-X-BYTERANGE:", "#EXT-X-KEY:")


def _attributes(value: str) -> dict[str, str]:
    return {name: raw.strip('"') for name, raw in _ATTRIBUTE.findall(value)}


def _is_segment_tag(line: str) -> bool:
    return line.startswith(_SEGMENT_TAGS) or line == "#EXT-X-DISCONTINUITY"


@dataclass(frozen=True)
class ListedPart:
    duration: float
    independent: bool


@dataclass(frozen=True)
class ListedSegment:
    msn: int
    duration: float
    parts: tuple[ListedPart, ...]
    program_date_time: str | None
    discontinuity: bool
    first_line: int  # index of its first tag line
    uri_line: int
    map_uri: str = INIT  # the EXT-X-MAP in force for it


@dataclass(frozen=True)
class PlaylistState:
    """What a media playlist holds, for answering blocking and delta requests (see :meth:`parse`)."""

    lines: tuple[str, ...]
    target_duration: float
    media_sequence: int
    discontinuity_sequence: int
    segments: tuple[ListedSegment, ...]
    open_parts: tuple[ListedPart, ...]  # parts of the segment after the last complete one
    ended: bool
    part_target: float | None = None
    can_block: bool = False
    can_skip_until: float | None = None
    body_start: int = 0

    @classmethod
    def parse(cls, text: str) -> PlaylistState:
        """Raises ``ValueError`` for text that is not a media playlist."""
        lines = tuple(line.strip() for line in text.splitlines())
        if not lines or lines[0] != "#EXTM3U":
            raise ValueError("not an HLS playlist (no #EXTM3U)")
        target = media_sequence = discontinuity_sequence = 0
        ended = can_block = False
        part_target = can_skip = None
        segments: list[ListedSegment] = []
        parts: list[ListedPart] = []
        body_start: int | None = None
        first_line: int | None = None
        duration: float | None = None
        date: str | None = None
        discontinuity = False
        map_uri = INIT
        for index, line in enumerate(lines):
            if not line:
                continue
            if line.startswith("#"):
                if _is_segment_tag(line):
                    body_start = index if body_start is None else body_start
                    first_line = index if first_line is None else first_line
                name, _, value = line.partition(":")
                if name == "#EXT-X-TARGETDURATION":
                    target = int(value)
                elif name == "#EXT-X-MEDIA-SEQUENCE":
                    media_sequence = int(value)
                elif name == "#EXT-X-DISCONTINUITY-SEQUENCE":
                    discontinuity_sequence = int(value)
                elif name == "#EXT-X-ENDLIST":
                    ended = True
                elif name == "#EXT-X-PART-INF":
                    part_target = float(_attributes(value)["PART-TARGET"])
                elif name == "#EXT-X-SERVER-CONTROL":
                    control = _attributes(value)
                    can_block = control.get("CAN-BLOCK-RELOAD") == "YES"
                    can_skip = float(control["CAN-SKIP-UNTIL"]) if "CAN-SKIP-UNTIL" in control else None
                elif name == "#EXT-X-PART":
                    attributes = _attributes(value)
                    parts.append(ListedPart(float(attributes["DURATION"]), attributes.get("INDEPENDENT") == "YES"))
                elif name == "#EXTINF":
                    duration = float(value.split(",", 1)[0])
                elif name == "#EXT-X-PROGRAM-DATE-TIME":
                    date = value
                elif name == "#EXT-X-DISCONTINUITY":
                    discontinuity = True
                elif name == "#EXT-X-MAP":
                    map_uri = _attributes(value).get("URI", map_uri)
                continue
            if duration is None:
                raise ValueError(f"a segment URI without EXTINF at line {index + 1}")
            segments.append(ListedSegment(media_sequence + len(segments), duration, tuple(parts), date,
                                          discontinuity, index if first_line is None else first_line, index, map_uri))
            parts, duration, date, discontinuity, first_line = [], None, None, False, None
        return cls(lines, float(target), media_sequence, discontinuity_sequence, tuple(segments), tuple(parts),
                   ended, part_target, can_block, can_skip, len(lines) if body_start is None else body_start)

    @property
    def low_latency(self) -> bool:
        """A playlist with parts whose server blocks reloads (what kinoray's ``low`` latency writes)."""
        return self.can_block and self.part_target is not None

    @property
    def last_msn(self) -> int:
        """The last complete segment's number (``media_sequence - 1`` while there is none)."""
        return self.segments[-1].msn if self.segments else self.media_sequence - 1

    @property
    def last_part(self) -> tuple[int, int] | None:
        """``(msn, part)`` of the last part listed."""
        if self.open_parts:
            return self.last_msn + 1, len(self.open_parts) - 1
        if self.segments and self.segments[-1].parts:
            return self.last_msn, len(self.segments[-1].parts) - 1
        return None

    @property
    def parts_per_segment(self) -> int:
        counts = [len(segment.parts) for segment in self.segments if segment.parts]
        if counts:
            return max(counts)
        return max(1, round(self.target_duration / self.part_target)) if self.part_target else 1

    def has(self, msn: int, part: int | None) -> bool:
        """Whether the playlist holds segment ``msn`` whole (``part`` ``None``) or its part ``part`` — or a later
        one, as RFC 8216bis's blocking reload asks. An ended playlist has everything it will ever have."""
        if self.ended or msn <= self.last_msn and part is None:
            return True
        if part is None:
            return False
        if msn <= self.last_msn:
            segment = next((s for s in self.segments if s.msn == msn), None)
            if segment is None or part < len(segment.parts):
                return True
            msn, part = msn + 1, 0  # past a complete segment's last part: the next segment's first
        last = self.last_part
        return last is not None and (msn, part) <= last

    def too_far(self, msn: int, part: int | None) -> bool:
        """RFC 8216bis 6.2.5.2: ``msn`` more than two segments past the last, or ``part`` more than the Advance
        Part Limit (three part targets' worth of parts) past the last part."""
        if msn > self.last_msn + 2:
            return True
        if part is None or self.part_target is None:
            return False
        limit = 3 / self.part_target if self.part_target < 1 else 3
        per = self.parts_per_segment
        last = self.last_part or (self.last_msn + 1, -1)
        return (msn - last[0]) * per + (part - last[1]) > limit

    def playlist_end(self) -> float:
        return sum(s.duration for s in self.segments) + sum(p.duration for p in self.open_parts)


@dataclass(frozen=True)
class BlockingRequest:
    """The LL-HLS delivery directives of a playlist request: ``_HLS_msn``, ``_HLS_part``, ``_HLS_skip``."""

    msn: int | None = None
    part: int | None = None
    skip: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> BlockingRequest:
        """Raises :class:`~kinoray.errors.InvalidParametersError` (400) for a malformed directive."""
        def number(name: str) -> int | None:
            raw = query.get(name)
            if raw is None:
                return None
            if not raw.isdigit() or len(raw) > 9:
                raise InvalidParametersError(f"{name} must be a non-negative integer")
            return int(raw)

        msn, part = number("_HLS_msn"), number("_HLS_part")
        if part is not None and msn is None:
            raise InvalidParametersError("_HLS_part needs _HLS_msn")
        skip = query.get("_HLS_skip")
        if skip is not None and skip not in ("YES", "v2"):
            raise InvalidParametersError("_HLS_skip must be YES or v2")
        return cls(msn, part, skip is not None)

    @property
    def blocking(self) -> bool:
        return self.msn is not None


def delta_update(state: PlaylistState) -> str:
    """The Playlist Delta Update of ``state`` (RFC 8216bis 6.2.5.1): the segments that end more than
    ``CAN-SKIP-UNTIL`` seconds before the playlist's end are replaced by ``EXT-X-SKIP``. A playlist that cannot
    skip (no ``CAN-SKIP-UNTIL``) or has nothing old enough to skip is returned whole."""
    text = "\n".join(state.lines).rstrip("\n") + "\n"
    if state.can_skip_until is None or not state.segments:
        return text
    boundary = state.playlist_end() - state.can_skip_until
    skipped, elapsed = 0, 0.0
    for segment in state.segments:
        elapsed += segment.duration
        if elapsed > boundary + 1e-9:
            break
        skipped += 1
    if skipped == 0:
        return text
    head = [line for line in state.lines[:state.body_start] if line]
    head = [f"#EXT-X-VERSION:{_VERSION}" if line.startswith("#EXT-X-VERSION:") else line for line in head]
    if skipped < len(state.segments):  # the init in force after the skip, when a replaced transcoder changed it
        head = [f'#EXT-X-MAP:URI="{state.segments[skipped].map_uri}"' if line.startswith("#EXT-X-MAP:") else line
                for line in head]
    rest = [line for line in state.lines[state.segments[skipped].first_line if skipped < len(state.segments)
                                         else state.segments[-1].uri_line + 1:] if line]
    return "\n".join([*head, f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}", *rest]) + "\n"


def resumed_segments(text: str) -> tuple[list[_Segment], int, int]:
    """The complete segments a playlist lists, as :class:`PartTrack` keeps them (a resumed stream goes on
    after them), the next segment number and the discontinuity sequence."""
    state = PlaylistState.parse(text)
    segments = []
    for listed in state.segments:
        start = datetime.fromisoformat(listed.program_date_time.replace("Z", "+00:00")).timestamp() \
            if listed.program_date_time else 0.0
        segments.append(_Segment(listed.msn, start, [_Part(index, part.duration, part.independent)
                                                     for index, part in enumerate(listed.parts)],
                                 listed.duration, listed.discontinuity, listed.map_uri))
    return segments, state.last_msn + 1, state.discontinuity_sequence


def part_target_for(part: Fraction, longest_sample: Fraction) -> float:
    """A track's ``PART-TARGET``: the grid's part plus one sample (a part ends with the sample that crosses
    the grid line), in milliseconds rounded up."""
    return math.ceil((part + longest_sample) * 1000) / 1000

