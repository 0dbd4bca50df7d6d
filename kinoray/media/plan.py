"""Chunk plan: the output timeline, its segment grid and the chunks that cover it.

Computed from :class:`MediaInfo` and :class:`KeyframeIndex` alone — no decoding — so playlists can be
written before a single frame is encoded.

Timeline rule (recorded in :attr:`ChunkPlan.cfr_rule`): output frame ``n`` is shown at ``n / frame_rate``
seconds after the first decodable source frame (the *origin*). Each source frame is assigned the slot
``round((pts - origin) × time_base × frame_rate)`` (halves round down, so timestamps rounded by a coarse
container clock still land on their own slot); slot ``n`` shows the first source frame assigned to it, or,
when none is, the latest frame assigned to an earlier slot. CFR input at its own rate maps one-to-one. VFR
input is resampled to its average rate: later frames sharing a slot are dropped and empty slots repeat.
Rates above ``max_frame_rate`` are divided by the smallest integer that brings them under it
(120 → 60, 100 → 50, 119.88 → 59.94), so the cadence stays regular.

Clipping (``clip_start``/``clip_end``, seconds on that timeline) keeps the output frames whose time lies in
``[clip_start, clip_end)``: slots ``ceil(clip_start × rate)`` up to ``ceil(clip_end × rate)``, renumbered from 0
(:attr:`ChunkPlan.first_slot`). The cut is frame-accurate; decoding starts at the random-access point before
the first kept frame, and the frames before it are pre-roll.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from kinoray.errors import InvalidMediaError
from kinoray.media.keyframes import KeyframeIndex
from kinoray.media.probe import MediaInfo, VideoStreamInfo

__all__ = ["Chunk", "ChunkPlan", "plan_chunks", "timescale_for"]

_COMMON_RATES = tuple(
    Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "48", "50", "60000/1001", "60")
)


@dataclass(frozen=True)
class Chunk:
    """A run of whole segments: output frames ``[start_frame, end_frame)``."""

    index: int
    start_frame: int
    end_frame: int
    first_segment: int
    segment_count: int
    decode_from_pts: int  # source pts of the random-access point decoding starts at
    first_source_pts: int  # source pts of the frame shown at start_frame
    last_source_pts: int  # source pts of the frame shown at end_frame - 1

    def __post_init__(self) -> None:
        if not 0 <= self.start_frame < self.end_frame:
            raise ValueError(f"chunk {self.index}: empty or negative frame range")
        if self.decode_from_pts > self.first_source_pts:
            raise ValueError(f"chunk {self.index}: decoding would start after its first frame")

    @property
    def frame_count(self) -> int:
        return self.end_frame - self.start_frame


@dataclass(frozen=True)
class ChunkPlan:
    source_path: str
    video: VideoStreamInfo
    stream_index: int
    source_time_base: Fraction
    origin_pts: int
    frame_rate: Fraction
    frame_count: int
    segment_frames: int
    timescale: int  # output track timescale; one frame lasts exactly frame_ticks
    chunks: tuple[Chunk, ...]
    source_frame_count: int
    is_cfr: bool
    cfr_rule: str
    #: Slot of the source's own timeline shown as output frame 0 (non-zero for a clip).
    first_slot: int = 0

    def __post_init__(self) -> None:
        if self.frame_count <= 0 or self.segment_frames <= 0:
            raise ValueError("plan must cover at least one frame and segments of at least one frame")
        if (self.timescale * self.frame_rate.denominator) % self.frame_rate.numerator:
            raise ValueError("timescale must hold a whole number of ticks per frame")
        covered = [c.frame_count for c in self.chunks]
        if sum(covered) != self.frame_count or self.chunks[0].start_frame != 0:
            raise ValueError("chunks must cover every output frame exactly once")

    @property
    def time_base(self) -> Fraction:
        """Time base of the output video tracks (1 / timescale)."""
        return Fraction(1, self.timescale)

    @property
    def frame_ticks(self) -> int:
        return self.timescale * self.frame_rate.denominator // self.frame_rate.numerator

    @property
    def segment_count(self) -> int:
        return -(-self.frame_count // self.segment_frames)

    @property
    def duration_seconds(self) -> Fraction:
        return self.frame_count / self.frame_rate

    @property
    def origin_seconds(self) -> Fraction:
        """Source time (seconds) of output frame 0: where the audio is cut to match."""
        return self.origin_pts * self.source_time_base + self.first_slot / self.frame_rate

    def segment_frame_range(self, segment: int) -> tuple[int, int]:
        start = segment * self.segment_frames
        return start, min(start + self.segment_frames, self.frame_count)

    def segment_durations(self) -> list[Fraction]:
        """Duration of every segment in seconds (all equal but possibly the last)."""
        return [
            Fraction(end - start) / self.frame_rate
            for start, end in map(self.segment_frame_range, range(self.segment_count))
        ]

    def slot_of(self, pts: int) -> int:
        """Output frame slot of a source timestamp (see the module's timeline rule); negative before a clip."""
        return _nearest_slot((pts - self.origin_pts) * self.source_time_base * self.frame_rate) - self.first_slot

    def is_segment_start(self, frame: int) -> bool:
        return frame % self.segment_frames == 0


def timescale_for(frame_rate: Fraction) -> int:
    """An MP4 track timescale in which one frame is a whole number of ticks (90 kHz when possible)."""
    if (90000 * frame_rate.denominator) % frame_rate.numerator == 0:
        return 90000
    return frame_rate.numerator * math.ceil(90000 / frame_rate.numerator)


def _snap_rate(rate: Fraction) -> Fraction:
    """The nearest broadcast rate (24000/1001 … 60) or whole / NTSC-style rate within 1% of ``rate``, else
    ``rate`` itself with a denominator ≤ 1001. A VFR average is an estimate; players prefer tidy rates."""
    whole = max(1, round(rate))
    candidates = [*_COMMON_RATES, Fraction(whole), Fraction(whole * 1000, 1001)]
    nearest = min(candidates, key=lambda common: abs(rate - common))
    if abs(rate - nearest) / nearest < Fraction(1, 100):
        return nearest
    return rate.limit_denominator(1001)


def _cap_rate(rate: Fraction, max_rate: int) -> Fraction:
    divisor = max(1, math.ceil(rate / max_rate))
    return rate / divisor


def _nearest_slot(position: Fraction) -> int:
    """The timeline rule's rounding: nearest whole slot, halves down."""
    return math.ceil(position - Fraction(1, 2))


def _slots(pts: list[int], origin: int, time_base: Fraction, rate: Fraction) -> list[int]:
    scale = time_base * rate
    return [_nearest_slot((p - origin) * scale) for p in pts]


def plan_chunks(
    info: MediaInfo,
    index: KeyframeIndex,
    *,
    segment_seconds: float | Fraction = 4,
    chunk_seconds: float | Fraction = 20,
    max_frame_rate: int = 60,
    parallelism: int | None = None,
    clip_start: Fraction | None = None,
    clip_end: Fraction | None = None,
) -> ChunkPlan:
    """Plan the output timeline and chunks for the video stream of ``info``.

    ``segment_seconds`` is the target (maximum) segment duration: a segment holds
    ``floor(segment_seconds × frame_rate)`` frames, so it never exceeds the target. ``chunk_seconds`` is
    rounded to a whole number of segments (at least one); each chunk is one unit of parallel work. With
    ``parallelism`` (the number of workers), chunks are shortened just enough that their count is a multiple
    of it, so no worker idles while the last chunk runs (60 s at 20 s chunks on 2 workers: 4 chunks of 16 s,
    not 3 of 20 s). ``clip_start``/``clip_end`` cut the timeline (see the module docstring).

    Raises:
        InvalidMediaError: no video, no decodable frame, a truncated file, or a clip that holds no frame.
    """
    if info.video is None:
        raise InvalidMediaError("cannot plan video chunks for a file without video")
    segment_seconds = Fraction(segment_seconds).limit_denominator(1000)
    chunk_seconds = Fraction(chunk_seconds).limit_denominator(1000)
    if segment_seconds <= 0 or chunk_seconds <= 0:
        raise ValueError("segment_seconds and chunk_seconds must be positive")

    first_rap = index.random_access_pts[0]
    source_pts = [p for p in index.presentation_pts if p >= first_rap]
    if not source_pts:
        raise InvalidMediaError("no decodable video frame after the first keyframe")
    origin = source_pts[0]
    time_base = index.time_base

    chosen, is_cfr = _choose_rate(info, source_pts, origin, time_base, _packet_duration(index, source_pts[-1]))
    rate = _cap_rate(chosen, max_frame_rate)
    is_cfr = is_cfr and rate == chosen
    slots = _slots(source_pts, origin, time_base, rate)
    last_duration = _last_duration(index, source_pts, time_base, rate)
    end_slot = _nearest_slot((source_pts[-1] + last_duration - origin) * time_base * rate)
    frame_count = max(slots[-1] + 1, end_slot)

    _check_not_truncated(info.video, Fraction(frame_count) / rate)
    first_slot, frame_count = _clip_slots(frame_count, rate, clip_start, clip_end)
    if first_slot:
        slots = [slot - first_slot for slot in slots]
    segment_frames = max(1, math.floor(segment_seconds * rate))
    segments_per_chunk = _segments_per_chunk(
        -(-frame_count // segment_frames), max(1, round(chunk_seconds * rate / segment_frames)), parallelism
    )
    starts = _chunk_starts(frame_count, segment_frames, segments_per_chunk,
                           lambda start: _preroll_frames(index, source_pts[_shown_at(slots, start)]))
    chunks = []
    for number, (start, end) in enumerate(zip(starts, [*starts[1:], frame_count], strict=True)):
        first_pts = source_pts[_shown_at(slots, start)]
        last_pts = source_pts[_shown_at(slots, end - 1)]
        chunks.append(
            Chunk(
                index=number,
                start_frame=start,
                end_frame=end,
                first_segment=start // segment_frames,
                segment_count=-(-(end - start) // segment_frames),
                decode_from_pts=index.random_access_at_or_before(first_pts),
                first_source_pts=first_pts,
                last_source_pts=last_pts,
            )
        )
    rule = (
        f"output frame n at n/{rate} s from source pts {origin} (time base {time_base}); "
        f"slot(pts) = ceil((pts - {origin}) * {time_base} * {rate} - 1/2); slot n shows the first frame "
        f"with slot n, else the latest with slot < n; {'CFR one-to-one' if is_cfr else 'VFR/cap resampled: drops and repeats as needed'}"
        + (f"; clipped: output frame 0 is source slot {first_slot}" if first_slot or clip_end is not None else "")
    )
    return ChunkPlan(
        source_path=info.path,
        video=info.video,
        stream_index=index.stream_index,
        source_time_base=time_base,
        origin_pts=origin,
        frame_rate=rate,
        frame_count=frame_count,
        segment_frames=segment_frames,
        timescale=timescale_for(rate),
        chunks=tuple(chunks),
        source_frame_count=sum(1 for slot in slots if 0 <= slot < frame_count) or 1,
        is_cfr=is_cfr,
        cfr_rule=rule,
        first_slot=first_slot,
    )


def _clip_slots(frame_count: int, rate: Fraction, start: Fraction | None, end: Fraction | None) -> tuple[int, int]:
    """``(first slot, frames)`` of the clip ``[start, end)`` of a ``frame_count``-frame timeline; an end past
    the timeline is the timeline's end."""
    first = math.ceil(start * rate) if start else 0
    last = frame_count if end is None else min(frame_count, math.ceil(end * rate))
    if first >= last:
        raise InvalidMediaError(
            f"the clip [{float(start or 0):g} s, {'end' if end is None else f'{float(end):g} s'}) holds no frame "
            f"of the {float(frame_count / rate):g} s video")
    return first, last - first


def _segments_per_chunk(segments: int, wanted: int, parallelism: int | None) -> int:
    """Segments per chunk: ``wanted``, or fewer so the chunk count fills ``parallelism`` workers evenly."""
    chunks = -(-segments // wanted)
    if not parallelism or parallelism <= 1 or chunks % parallelism == 0 or segments <= parallelism:
        return wanted
    balanced = -(-chunks // parallelism) * parallelism
    return max(1, -(-segments // balanced))


def _chunk_starts(frame_count: int, segment_frames: int, segments_per_chunk: int,
                  preroll: Callable[[int], int]) -> list[int]:
    """First output frame of each chunk: ``segments_per_chunk`` segments each, except one shorter chunk when
    the segments do not divide evenly. That chunk goes where the cuts cost the least pre-roll (frames decoded
    before a chunk's first frame, from its random-access point) — with long-GOP sources the cuts then land
    just after keyframes. The chunk lengths, and so how evenly they fill the workers, do not change; on a tie
    the short chunk stays last."""
    segments = -(-frame_count // segment_frames)
    count = -(-segments // segments_per_chunk)
    short = segments - (count - 1) * segments_per_chunk
    best: tuple[int, list[int]] | None = None
    for position in (range(count - 1, -1, -1) if short < segments_per_chunk else [count - 1]):
        lengths = [short if n == position else segments_per_chunk for n in range(count)]
        starts = [sum(lengths[:n]) * segment_frames for n in range(count)]
        cost = sum(preroll(start) for start in starts)
        if best is None or cost < best[0]:
            best = (cost, starts)
    assert best is not None
    return best[1]


def _preroll_frames(index: KeyframeIndex, first_pts: int) -> int:
    """Frames decoded and dropped before ``first_pts`` when decoding from its random-access point."""
    shown = index.presentation_pts
    return bisect_left(shown, first_pts) - bisect_left(shown, index.random_access_at_or_before(first_pts))


def _check_not_truncated(video: VideoStreamInfo, present: Fraction) -> None:
    """A header that promises much more video than the packets hold means the file was cut short."""
    declared = video.duration_seconds
    if declared is not None and declared - present > max(Fraction(1), declared / 10):
        raise InvalidMediaError(
            f"the file is truncated: its header declares {float(declared):.2f}s of video but only "
            f"{float(present):.2f}s of frames are present"
        )


def _shown_at(slots: list[int], slot: int) -> int:
    """Index of the source frame shown at ``slot``: the first one assigned to it, else the latest before."""
    position = bisect_left(slots, slot)
    if position < len(slots) and slots[position] == slot:
        return position
    return max(position - 1, 0)


def _choose_rate(
    info: MediaInfo, pts: list[int], origin: int, time_base: Fraction, last_packet_duration: int
) -> tuple[Fraction, bool]:
    """The stream's own rate when every frame lands on its own consecutive slot, else the average rate."""
    video = info.video
    assert video is not None
    candidates = [r for r in (video.real_rate, video.average_rate) if r]
    for rate in candidates:
        if _slots(pts, origin, time_base, rate) == list(range(len(pts))):
            return rate, True
    if len(pts) < 2 or pts[-1] == pts[0]:
        return (candidates[0] if candidates else Fraction(25)), True
    last_duration = last_packet_duration
    if last_duration:  # frames ÷ displayed span, like the container's own average
        average = Fraction(len(pts)) / ((pts[-1] - pts[0] + last_duration) * time_base)
    else:
        average = Fraction(len(pts) - 1) / ((pts[-1] - pts[0]) * time_base)
    return _snap_rate(average), False


def _packet_duration(index: KeyframeIndex, pts: int) -> int:
    """The container's duration of the packet presented at ``pts`` (0 when unknown)."""
    for packet_pts, duration in zip(index.pts, index.duration, strict=True):
        if packet_pts == pts and duration > 0:
            return duration
    return 0


def _last_duration(index: KeyframeIndex, pts: list[int], time_base: Fraction, rate: Fraction) -> int:
    """Display duration of the last frame in source ticks: its packet duration, else one output frame."""
    return _packet_duration(index, pts[-1]) or max(1, round(1 / (rate * time_base)))
