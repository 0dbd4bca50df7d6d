"""Decoding a chunk's frames onto the output timeline, and scaling them to every rendition."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
import av.video.reformatter
import numpy as np
from av.video.reformatter import VideoReformatter

from kinoray.errors import InvalidMediaError, TranscodeError
from kinoray.media.ladder import Rendition
from kinoray.media.plan import Chunk, ChunkPlan
from kinoray.media.probe import VideoStreamInfo, corrupt_packet_error, open_input, stream_at

__all__ = [
    "QUARTER_TURNS",
    "ChunkDecodeStats",
    "RenditionScaler",
    "Scaler",
    "decode_chunk_frames",
    "even_yuv420p",
    "plane_array",
    "write_plane",
]

log = logging.getLogger(__name__)

# BITEXACT|ACCURATE_RND: swscale otherwise picks SIMD or C paths by buffer alignment, whose rounding differs,
# so the same frame could scale (and encode) differently from one run or machine to the next.
_BICUBIC = (av.video.reformatter.Interpolation.BICUBIC | av.video.reformatter.Interpolation.ACCURATE_RND
            | av.video.reformatter.Interpolation.BITEXACT)


@dataclass
class ChunkDecodeStats:
    decoded: int = 0  # frames out of the decoder, pre-roll included
    preroll: int = 0  # decoded before the chunk's first frame and dropped
    repeated: int = 0  # output slots filled by repeating the previous source frame (CFR rule)
    dropped: int = 0  # source frames inside the chunk that lost their slot to a later frame
    concealed: int = 0  # slots at the very end filled because the decoder ran out of frames
    corrupt: int = 0  # frames the decoder flagged as corrupt
    hwaccel: str | None = None
    notes: list[str] = field(default_factory=list)


def decode_chunk_frames(
    plan: ChunkPlan,
    chunk: Chunk,
    stats: ChunkDecodeStats,
    *,
    threads: int = 1,
    hwaccel: Any | None = None,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(output_frame_index, frame)`` for every output slot of ``chunk``, in order.

    Seeks to the chunk's random-access point, decodes pre-roll frames and drops them, and maps source frames
    to slots with the plan's CFR rule. Stops as soon as the chunk is complete; the decoder is not drained.
    """
    kwargs: dict[str, Any] = {"hwaccel": hwaccel} if hwaccel is not None else {}
    container = open_input(plan.source_path, **kwargs)
    try:
        stream = stream_at(container, plan.stream_index)
        stream.codec_context.thread_count = threads
        stream.codec_context.thread_type = "AUTO" if threads != 1 else "SLICE"
        if hwaccel is not None:
            stats.hwaccel = getattr(hwaccel, "device_type", "cuda")
        packets = _packets_from(container, stream, chunk.decode_from_pts, plan.origin_pts)
        next_slot = chunk.start_frame
        pending: av.VideoFrame | None = None
        pending_slot = -1
        pending_emitted = False
        first_seen = True
        for frame in _frames(packets):
            stats.decoded += 1
            stats.corrupt += bool(frame.is_corrupt)
            pts = frame.pts
            if pts is None or pts < plan.origin_pts:
                stats.preroll += 1
                continue
            if first_seen:
                first_seen = False
                if pts > chunk.first_source_pts:
                    raise TranscodeError(
                        f"chunk {chunk.index}: decoding started at pts {pts}, after the chunk's first frame "
                        f"{chunk.first_source_pts}; the keyframe index does not match the file"
                    )
            slot = plan.slot_of(pts)
            if pending is not None and slot == pending_slot:
                # The first frame of a slot is kept (timeline rule); later ones are dropped.
                if slot < chunk.start_frame:
                    stats.preroll += 1
                else:
                    stats.dropped += 1
                continue
            if pending is not None:
                # ``pending`` is what every slot from its own up to slot - 1 shows: those slots are final.
                while next_slot < min(slot, chunk.end_frame):
                    stats.repeated += next_slot != pending_slot
                    pending_emitted = True
                    yield next_slot, pending
                    next_slot += 1
                if next_slot >= chunk.end_frame:
                    return
                if not pending_emitted:
                    stats.preroll += 1
            pending, pending_slot, pending_emitted = frame, slot, False
        if pending is None:
            raise InvalidMediaError(f"chunk {chunk.index}: no decodable frame in its source range")
        if chunk.end_frame == plan.frame_count and pending.is_corrupt:
            # The stream's final frame is damaged: the file was cut inside it (kinoray.media.validate checks
            # this at plan time too, unless the last GOP was too long to decode there).
            raise InvalidMediaError("the file is truncated: its last video frame is incomplete")
        ran_short = pending.pts is not None and pending.pts < chunk.last_source_pts
        while next_slot < chunk.end_frame:
            if next_slot != pending_slot:
                if ran_short:
                    stats.concealed += 1
                else:
                    stats.repeated += 1
            yield next_slot, pending
            next_slot += 1
        if ran_short:
            stats.notes.append(f"decoder ended early; {stats.concealed} slot(s) repeat the last frame")
    finally:
        container.close()


def _packets_from(
    container: av.container.InputContainer, stream: av.VideoStream, target_pts: int, origin_pts: int
) -> Iterator[av.Packet]:
    """Demux from a point at or before the random-access point ``target_pts`` in decode order.

    Some demuxers (MPEG-TS) seek approximately; if the first packet lands after the target, seek again
    further back, and finally from the start of the file.
    """
    time_base = stream.time_base or 1
    backoff = int(2 / time_base) if time_base else 0
    attempts = [target_pts, target_pts - backoff, target_pts - 5 * backoff, None]
    for attempt in attempts:
        if attempt is not None and attempt <= origin_pts:
            attempt = None
        if attempt is not None:
            container.seek(attempt, stream=stream, backward=True, any_frame=False)
        elif target_pts > origin_pts:  # an earlier attempt moved the demuxer: go back to the start
            container.seek(0, backward=True, any_frame=False)
        iterator = container.demux(stream)
        first = next((p for p in iterator if p.size), None)
        if first is None:
            return iter(())
        if attempt is None or (first.pts is not None and first.pts <= target_pts):
            return itertools.chain([first], iterator)
        log.debug("seek overshot; retrying further back", extra={"target": target_pts, "landed": first.pts})
    raise TranscodeError("could not seek to the chunk's keyframe")  # unreachable: the last attempt returns


def _frames(packets: Iterator[av.Packet]) -> Iterator[av.VideoFrame]:
    """Decode in display order (the demuxer's final empty packet flushes the decoder).

    A packet the decoder rejects means the file is damaged; it is reported rather than concealed, so an
    asset never silently shows repeated frames where the source had pictures.
    """
    for packet in packets:
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            raise corrupt_packet_error("video", packet, e) from e
        yield from frames


class Scaler(Protocol):
    """Source frame in, one ``yuv420p`` frame per rendition out (largest first)."""

    name: str

    def scale(self, frame: av.VideoFrame) -> list[av.VideoFrame]: ...


class RenditionScaler:
    """Turns decoded source frames into one ``yuv420p`` frame per rendition.

    Rotation (display matrix) is applied on the source planes, non-square pixels are stretched to the
    display aspect, and each rendition is scaled from the next larger one (1080 → 720 → 480 …), which costs
    far less than scaling every rung from the source and is what the ladder's quality was measured with.
    """

    def __init__(self, video: VideoStreamInfo, renditions: tuple[Rendition, ...]) -> None:
        if not renditions:
            raise ValueError("at least one rendition is needed")
        self.name = "swscale"
        self.rotation = video.rotation
        self.renditions = renditions
        self.colorspace = video.colorspace
        self.color_range = video.color_range
        # One swscale context per rung, kept across frames: ``VideoFrame.reformat`` would build (and compute
        # the filter taps of) a fresh context for every frame and every rung.
        self._reformatters = [VideoReformatter() for _ in renditions]

    def _rotated(self, frame: av.VideoFrame) -> av.VideoFrame:
        if not self.rotation:
            return frame
        source = even_yuv420p(frame)
        planes = [np.rot90(plane_array(source, i), k=QUARTER_TURNS[self.rotation]) for i in range(3)]
        width, height = planes[0].shape[1], planes[0].shape[0]
        rotated = av.VideoFrame(width, height, "yuv420p")
        for index, plane in enumerate(planes):
            write_plane(rotated, index, np.ascontiguousarray(plane))
        return rotated

    def scale(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        """One frame per rendition, largest first; pts/time_base are left for the caller to set."""
        current = self._rotated(frame)
        outputs = []
        for rendition, reformatter in zip(self.renditions, self._reformatters, strict=True):
            if (current.width, current.height, current.format.name) != (rendition.width, rendition.height, "yuv420p"):
                current = reformatter.reformat(
                    current, width=rendition.width, height=rendition.height, format="yuv420p",
                    interpolation=_BICUBIC, threads=1,
                )
            outputs.append(current)
        return outputs


#: display rotation (degrees clockwise) -> counter-clockwise quarter turns, as np.rot90 / torch.rot90 count them
QUARTER_TURNS = {90: 1, 180: 2, 270: 3}


def even_yuv420p(frame: av.VideoFrame) -> av.VideoFrame:
    """``frame`` as ``yuv420p`` with even dimensions (what rotating whole 4:2:0 planes needs)."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    if frame.width % 2 or frame.height % 2:
        frame = frame.reformat(width=frame.width & ~1, height=frame.height & ~1)
    return frame


def plane_array(frame: av.VideoFrame, index: int) -> np.ndarray:
    plane = frame.planes[index]
    width = plane.width
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, :width]


def write_plane(frame: av.VideoFrame, index: int, data: np.ndarray) -> None:
    plane = frame.planes[index]
    target = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)
    target[:, : plane.width] = data
