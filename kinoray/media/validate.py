"""Media validation: refuse, with a typed reason, what no player could play, before a frame is encoded.

Every check raises a :class:`~kinoray.errors.MediaError` subclass whose message says what is wrong in words a
user can act on; the runner stores its ``type`` and message in the asset's ``errors`` and the CLI prints them
as one JSON line. The checks run where the facts they need are already at hand, so together they cost one
container open, one demux of every packet (which the keyframe index does anyway) and the decode of the last
GOP:

probe (headers and one decoded frame, :func:`check_container` and :func:`check_picture_size`):
    * still-image demuxers (``image2``, ``png_pipe``, ``jpeg_pipe``, ...) and single-picture codecs in a
      container that declares one frame: :class:`UnsupportedMediaError`;
    * a picture whose short side is below ``limits.min_dimension`` (16 px by default):
      :class:`MediaLimitError`;
    * MPEG-TS whose size is not a whole number of TS packets (cut mid-packet): truncated.

index (every packet demuxed, no decoding, :func:`check_packets`):
    * a video stream of fewer than two frames (a still image, zero duration): :class:`UnsupportedMediaError`;
    * a header frame count (MP4 ``stsz``) above the packets present, or a container duration from a header
      (Matroska/WebM, MP4/MOV, FLV, ASF, AVI) longer than the packets present: truncated;
    * timestamps spanning far more than the container declares (a zero or absurd ``mdhd`` timescale):
      :class:`InvalidMediaError`.

plan (:func:`check_plan`): an output rate below :data:`MIN_FRAME_RATE` (frames more than 10 s apart) or
several frames collapsing onto one timestamp.

tail (:func:`check_tail`, :func:`check_audio_tail`): the last GOP and the last second of audio are decoded:
a final frame the decoder flags as corrupt, fewer frames than packets, or a last audio packet the decoder
rejects means the file was cut inside a frame (MPEG-TS cut on a packet boundary, any container cut
mid-frame). The video part is skipped when the last GOP is too long to decode cheaply; the chunk decoder then
makes the same check on the final chunk (:mod:`kinoray.media.frames`) and the audio encoder rejects a damaged
packet, both still before anything is published.

No Ray and no HTTP here; functions take what probe/index/plan produced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import av.logging

from kinoray.errors import InvalidMediaError, MediaLimitError, UnsupportedMediaError

if TYPE_CHECKING:
    from kinoray.media.keyframes import KeyframeIndex
    from kinoray.media.plan import ChunkPlan
    from kinoray.media.probe import MediaInfo, VideoStreamInfo

__all__ = [
    "IMAGE_CODECS",
    "IMAGE_DEMUXERS",
    "MIN_FRAME_RATE",
    "StreamExtent",
    "check_audio_tail",
    "check_container",
    "check_packets",
    "check_picture_size",
    "check_plan",
    "check_tail",
    "check_ts_packets",
    "truncation_tolerance",
]

log = logging.getLogger(__name__)

#: Demuxers that read still pictures, never video (``image2`` covers numbered image sequences too).
IMAGE_DEMUXERS = frozenset({"image2", "image2pipe"})
#: Codecs that carry single pictures; in a container they are video only when there is more than one frame
#: (Motion-JPEG cameras, animated GIF).
IMAGE_CODECS = frozenset({
    "png", "apng", "mjpeg", "jpegls", "jpeg2000", "bmp", "gif", "tiff", "webp", "ppm", "pgm", "pgmyuv", "pbm",
    "pam", "qoi", "sgi", "targa", "dds", "exr", "hdr", "pcx", "xbm", "xpm", "xwd", "sunrast", "photocd",
    "pictor", "psd", "jpegxl", "avif", "heic",
})
#: Below this output rate (frames more than 10 s apart) a stream's timing is broken, not slow.
MIN_FRAME_RATE = Fraction(1, 10)
#: Containers whose duration comes from a header (not estimated from packets or the bitrate): a header that
#: promises more than the packets hold means the file was cut short.
_HEADER_DURATION_FORMATS = ("matroska", "mov", "flv", "asf", "avi")
#: TS packet layouts: (packet size, offset of the sync byte in a packet).
_TS_LAYOUTS = ((188, 0), (192, 4), (204, 0))
#: pixels × frames decoded at most by the tail check (about 300 frames of 1080p)
_TAIL_PIXEL_BUDGET = 300 * 1920 * 1080
#: seconds of audio the audio tail check decodes
_AUDIO_TAIL_SECONDS = Fraction(1)


@dataclass(frozen=True)
class StreamExtent:
    """What the demuxer delivered for one stream: packets, and the span their timestamps cover (seconds)."""

    index: int
    kind: str  # "video", "audio", "subtitle", ...
    packets: int
    start_seconds: Fraction | None
    end_seconds: Fraction | None  # latest pts + duration
    last_corrupt: bool  # the demuxer flagged the stream's last packet as corrupt (a PES cut short)


def truncation_tolerance(declared: Fraction, frame_interval: Fraction | None = None) -> Fraction:
    """How much shorter than declared the media may be before it counts as truncated: a quarter second or 1%,
    plus one frame interval (a container need not store the last packet's duration)."""
    return max(Fraction(1, 4), declared / 100) + (frame_interval or 0)


def _is_image_demuxer(name: str) -> bool:
    return name in IMAGE_DEMUXERS or name.endswith("_pipe")


def check_container(container: av.container.InputContainer, video: Any | None) -> None:
    """Header-level refusals: still-image inputs (an image file, whatever its name says)."""
    name = container.format.name
    if video is None:
        return
    codec = video.codec_context.name
    if _is_image_demuxer(name):
        raise UnsupportedMediaError(
            f"the file is a still image ({codec}, read by the {name} demuxer), not a video")
    if codec in IMAGE_CODECS and (video.frames or 0) == 1:
        raise UnsupportedMediaError(f"the video stream is a single {codec} picture (a still image), not a video")
    time_base = Fraction(video.time_base) if video.time_base else None
    frames = video.frames or 0
    if time_base is not None and frames > 1 and video.duration:
        interval = video.duration * time_base / frames
        if time_base > interval:
            raise InvalidMediaError(
                f"the video's timescale is broken: {frames} frames in {float(video.duration * time_base):.2f}s "
                f"cannot be timed in ticks of {float(time_base):g}s (a zero or wrong timescale?)")


def check_picture_size(width: int, height: int, display_width: int, display_height: int, min_dimension: int) -> None:
    """The picture (coded and as displayed) must be at least ``min_dimension`` pixels on its short side."""
    short = min(width, height, display_width, display_height)
    if short < min_dimension:
        shown = f"{width}x{height}" + (
            f" (displayed {display_width}x{display_height})" if (display_width, display_height) != (width, height)
            else "")
        raise MediaLimitError(
            f"video is {shown}; pictures smaller than {min_dimension} px on a side cannot be streamed "
            f"(limits.min_dimension)")


def check_ts_packets(head: bytes, size: int) -> None:
    """An MPEG-TS file is a whole number of fixed-size packets; a partial last packet means it was cut."""
    for packet_size, sync in _TS_LAYOUTS:
        offsets = [sync + n * packet_size for n in range(3)]
        if all(offset < len(head) and head[offset] == 0x47 for offset in offsets):
            if size % packet_size:
                raise InvalidMediaError(
                    f"the file is truncated: the MPEG-TS stream ends {size % packet_size} bytes into a "
                    f"{packet_size}-byte packet")
            return


def _declared_container_duration(info: MediaInfo) -> Fraction | None:
    if info.duration_seconds is None or not any(name in info.container for name in _HEADER_DURATION_FORMATS):
        return None
    return info.duration_seconds


def check_packets(info: MediaInfo, extents: tuple[StreamExtent, ...], index: KeyframeIndex | None = None) -> None:
    """Compare what the headers declare with the packets the demuxer delivered (see the module docstring)."""
    video = info.video
    if video is not None and index is not None:
        _check_video_packets(video, index)
    media = [e for e in extents if e.kind in ("video", "audio", "subtitle") and e.packets]
    if not media:
        return
    for extent in media:
        if extent.last_corrupt and extent.kind in ("video", "audio"):
            raise InvalidMediaError(
                f"the file is truncated: its last {extent.kind} packet is incomplete")
    starts = [e.start_seconds for e in media if e.start_seconds is not None]
    ends = [e.end_seconds for e in media if e.end_seconds is not None]
    if not starts or not ends:
        return
    present = max(ends) - min(starts)
    declared = _declared_container_duration(info)
    rate = (video.average_rate or video.real_rate) if video is not None else None
    interval = 1 / rate if rate else None
    if declared is not None and declared - present > truncation_tolerance(declared, interval):
        raise InvalidMediaError(
            f"the file is truncated (or its header is wrong): it declares {float(declared):.2f}s of media but its "
            f"packets hold {float(present):.2f}s")
    if declared is not None and present > 2 * declared + 10:
        raise InvalidMediaError(
            f"the file's timestamps are broken: its packets span {float(present):.0f}s but the container declares "
            f"{float(declared):.2f}s (a zero or wrong timescale?)")
    own = next((e for e in media if video is not None and e.index == video.index), None)
    if (video is not None and video.duration_seconds and own is not None and own.start_seconds is not None
            and own.end_seconds is not None):
        span = own.end_seconds - own.start_seconds
        if span > 2 * video.duration_seconds + 10:
            raise InvalidMediaError(
                f"the video's timestamps are broken: its frames span {float(span):.0f}s but the stream declares "
                f"{float(video.duration_seconds):.2f}s (a zero or wrong timescale?)")


def _check_video_packets(video: VideoStreamInfo, index: KeyframeIndex) -> None:
    packets = sum(1 for size in index.size if size > 0)
    declared = video.frame_count
    if declared and declared - packets > max(2, declared // 100):
        raise InvalidMediaError(
            f"the file is truncated: its header lists {declared} video frames but only {packets} are present")
    if packets < 2:
        raise UnsupportedMediaError(
            f"the video stream holds {'a single frame' if packets == 1 else 'no frame'} ({video.codec}): a still "
            f"image, not a video")


def check_plan(plan: ChunkPlan) -> None:
    """The planned timeline must be one a player can show: a sane rate, frames on distinct timestamps."""
    if plan.frame_rate < MIN_FRAME_RATE:
        seconds = 1 / plan.frame_rate
        raise InvalidMediaError(
            f"the video's timing is broken: its frames are {float(seconds):.0f}s apart "
            f"(a zero or wrong timescale?)")
    if plan.frame_count == 1 and plan.source_frame_count > 1:
        raise InvalidMediaError(
            f"the video's timing is broken: its {plan.source_frame_count} frames share one timestamp")


def check_tail(info: MediaInfo, index: KeyframeIndex) -> None:
    """Decode from the last random-access point to the end: a cut inside the last frame shows as a frame the
    decoder flags corrupt, or as fewer frames than packets. Skipped (the chunk decoder checks the final chunk)
    when that GOP is longer than :data:`_TAIL_PIXEL_BUDGET` allows."""
    from kinoray.media.frames import _packets_from
    from kinoray.media.probe import corrupt_packet_error, open_input, stream_at

    video = info.video
    if video is None or not index.random_access_pts:
        return
    last_rap = index.random_access_pts[-1]
    expected = sum(1 for pts, size in zip(index.pts, index.size, strict=True)
                   if pts is not None and pts >= last_rap and size > 0)
    if expected == 0 or expected * video.width * video.height > _TAIL_PIXEL_BUDGET:
        return
    origin = index.random_access_pts[0]
    container = open_input(info.path)
    try:
        stream = stream_at(container, index.stream_index)
        stream.codec_context.thread_count = 1  # decoder messages stay on this thread, where Capture takes them
        decoded: list[tuple[int, bool]] = []
        # A damaged tail makes the decoder log errors; the typed error below says it once, in words.
        with av.logging.Capture(local=True):
            for packet in _packets_from(container, stream, last_rap, origin):
                try:
                    frames = packet.decode()
                except av.FFmpegError as e:
                    raise corrupt_packet_error("video", packet, e) from e
                decoded += [(f.pts, bool(f.is_corrupt)) for f in frames if f.pts is not None and f.pts >= last_rap]
    finally:
        container.close()
    if not decoded:
        raise InvalidMediaError("the file is truncated: its last keyframe does not decode")
    decoded.sort()
    if decoded[-1][1]:
        at = float((decoded[-1][0] - index.presentation_pts[0]) * index.time_base)
        raise InvalidMediaError(f"the file is truncated: its last video frame (at {at:.2f}s) is incomplete")
    if len(decoded) < expected - 1:
        raise InvalidMediaError(
            f"the file is truncated: only {len(decoded)} of the last {expected} video frames decode")


def check_audio_tail(info: MediaInfo, extents: tuple[StreamExtent, ...]) -> None:
    """Decode the last :data:`_AUDIO_TAIL_SECONDS` of the audio stream: a file cut inside an audio frame ends
    with a packet the decoder rejects (an MPEG-TS cut on a packet boundary, where the parser hides the short
    PES). Only the final packet counts: earlier ones may follow a seek the decoder has not recovered from."""
    from kinoray.media.probe import open_input, stream_at

    audio = info.audio
    extent = next((e for e in extents if audio is not None and e.index == audio.index), None)
    if audio is None or extent is None or extent.end_seconds is None or not extent.packets:
        return
    container = open_input(info.path)
    try:
        stream = stream_at(container, audio.index)
        target = extent.end_seconds - _AUDIO_TAIL_SECONDS
        if extent.start_seconds is not None and target > extent.start_seconds:
            container.seek(int(target / audio.time_base), stream=stream, backward=True, any_frame=False)
        failure: av.FFmpegError | None = None
        last_pts = None
        with av.logging.Capture(local=True):
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                last_pts = packet.pts
                try:
                    packet.decode()
                    failure = None
                except av.FFmpegError as e:
                    failure = e
    except av.FFmpegError:
        return  # a demuxer that cannot seek or read here: the audio encode reports damage, before publishing
    finally:
        container.close()
    if failure is not None:
        at = f" near {float(last_pts * audio.time_base):.2f}s" if last_pts is not None else ""
        reason = f" ({failure.strerror})" if failure.strerror and "Error number" not in failure.strerror else ""
        raise InvalidMediaError(f"the file is truncated: its last audio packet{at} does not decode{reason}")
