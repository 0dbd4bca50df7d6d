"""Probe: what is in a media file, read from container headers and one decoded frame."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import av

from kinoray.errors import InvalidMediaError, MediaLimitError, StorageError
from kinoray.media import validate
from kinoray.settings import InputLimits
from kinoray.store.objects import is_local_url, open_url, url_size

__all__ = [
    "AudioStreamInfo",
    "MediaInfo",
    "VideoStreamInfo",
    "corrupt_packet_error",
    "open_input",
    "probe",
    "stream_at",
]

log = logging.getLogger(__name__)

#: demuxed packets probe reads at most while looking for the first decodable video frame
_FIRST_FRAME_PACKET_BUDGET = 600


@dataclass(frozen=True)
class VideoStreamInfo:
    """The first video stream. ``width``/``height`` are coded; ``display_*`` apply rotation and sample aspect."""

    index: int
    codec: str
    profile: str | None
    width: int
    height: int
    display_width: int
    display_height: int
    rotation: int  # counter-clockwise degrees to turn the decoded picture for display (0/90/180/270)
    sample_aspect_ratio: Fraction
    pix_fmt: str
    bit_depth: int
    color_primaries: int | None
    color_trc: int | None
    colorspace: int | None
    color_range: int | None
    average_rate: Fraction | None  # frames ÷ duration as the container states it
    real_rate: Fraction | None  # lowest rate that represents all timestamps (r_frame_rate)
    time_base: Fraction
    start_pts: int | None
    duration_seconds: Fraction | None
    frame_count: int | None  # from the header; may be absent or wrong, the keyframe index counts packets

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise InvalidMediaError(f"video stream {self.index} has no dimensions")
        if self.rotation not in (0, 90, 180, 270):
            raise ValueError(f"rotation must be a multiple of 90, got {self.rotation}")


@dataclass(frozen=True)
class AudioStreamInfo:
    index: int
    codec: str
    channels: int
    layout: str
    sample_rate: int
    time_base: Fraction
    start_pts: int | None
    duration_seconds: Fraction | None


@dataclass(frozen=True)
class MediaInfo:
    path: str
    container: str
    size_bytes: int
    duration_seconds: Fraction | None
    bit_rate: int | None
    stream_count: int
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None

    @property
    def has_video(self) -> bool:
        return self.video is not None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (Fractions become strings like ``"30000/1001"``)."""

        def convert(value: Any) -> Any:
            if isinstance(value, Fraction):
                return str(value)
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            return value

        return convert(asdict(self))


def open_input(path: str, **kwargs: Any) -> av.container.InputContainer:
    """``av.open`` for reading a path or a ``file://``, ``s3://`` or ``http(s)://`` URL (remote objects are read
    through a seekable fsspec file object, so only the byte ranges the demuxer asks for are fetched), with
    FFmpeg errors turned into :class:`InvalidMediaError`."""
    reader = None
    if not is_local_url(path):
        try:
            reader = open_url(path)
        except StorageError as e:
            raise InvalidMediaError(f"cannot read input {path}: {e}") from e
    try:
        # The container holds the reader; both go when it is closed and dropped.
        return av.open(reader if reader is not None else path.removeprefix("file://"), mode="r", **kwargs)
    except av.FFmpegError as e:
        if reader is not None:
            reader.close()
        raise InvalidMediaError(f"not a readable media file ({e.strerror or e}): {_name(path)}") from e


def _name(path: str) -> str:
    return os.path.basename(path.rstrip("/"))


def corrupt_packet_error(kind: str, packet: av.Packet, error: av.FFmpegError) -> InvalidMediaError:
    """The error for a ``kind`` ("video"/"audio") packet the decoder rejects, with where it sits."""
    where = ""
    if packet.pts is not None and packet.time_base:
        where = f" near {float(packet.pts * packet.time_base):.3f}s"
    return InvalidMediaError(f"the {kind} data is corrupt{where}: {error.strerror or error}")


def stream_at(container: av.container.InputContainer, index: int) -> Any:
    """The stream whose container-wide index is ``index``."""
    for stream in container.streams:
        if stream.index == index:
            return stream
    raise InvalidMediaError(f"the file has no stream #{index}")


def _fraction(value: Any) -> Fraction | None:
    if value is None:
        return None
    fraction = Fraction(value)
    return fraction if fraction > 0 else None


def _seconds(pts: int | None, time_base: Fraction | None) -> Fraction | None:
    if pts is None or time_base is None:
        return None
    return pts * time_base


def _bit_depth(pix_fmt: str) -> int:
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        return 8
    return max((c.bits for c in fmt.components), default=8)


def _display_size(width: int, height: int, sar: Fraction, rotation: int) -> tuple[int, int]:
    display_width = max(1, round(width * sar)) if sar != 1 else width
    if rotation in (90, 270):
        return height, display_width
    return display_width, height


def _check_limits(path: str, size: int, container: av.container.InputContainer, limits: InputLimits) -> None:
    if size > limits.max_file_bytes:
        raise MediaLimitError(f"file is {size} bytes; the limit is {limits.max_file_bytes}")
    if len(container.streams) > limits.max_streams:
        raise MediaLimitError(f"file has {len(container.streams)} streams; the limit is {limits.max_streams}")
    if container.duration is not None and container.duration / av.time_base > limits.max_duration_seconds:
        raise MediaLimitError(
            f"duration {container.duration / av.time_base:.0f}s exceeds the limit of {limits.max_duration_seconds:.0f}s"
        )
    for stream in _video_streams(container):
        width, height = stream.codec_context.width, stream.codec_context.height
        if max(width, height) > limits.max_dimension or width * height > limits.max_pixels:
            raise MediaLimitError(
                f"video is {width}x{height}; the limits are {limits.max_dimension} per side and "
                f"{limits.max_pixels} pixels"
            )


def _video_streams(container: av.container.InputContainer) -> list[av.VideoStream]:
    """The video streams that are video: cover art (an ``attached_pic`` picture in a music file) is not."""
    attached = int(av.stream.Disposition.attached_pic)
    return [s for s in container.streams.video if not int(s.disposition) & attached]


def _check_ts_size(path: str, size: int) -> None:
    try:
        reader = open_url(path) if not is_local_url(path) else open(path.removeprefix("file://"), "rb")
        with reader:
            head = reader.read(1024)
    except (OSError, StorageError) as e:
        raise InvalidMediaError(f"cannot read input: {getattr(e, 'strerror', None) or e}") from e
    validate.check_ts_packets(head, size)


def _first_frame(container: av.container.InputContainer, stream: av.VideoStream) -> av.VideoFrame:
    packets = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            packets += 1
            try:
                frames = packet.decode()
            except av.FFmpegError:
                frames = []
            if frames:
                return frames[0]
            if packets >= _FIRST_FRAME_PACKET_BUDGET:
                break
    except av.FFmpegError as e:
        raise InvalidMediaError(f"video stream cannot be demuxed: {e.strerror or e}") from e
    raise InvalidMediaError(
        "the video stream has no decodable frame" + (" (no video packets at all)" if packets == 0 else
                                                     f" in its first {packets} packets")
    )


def probe(path: str, limits: InputLimits | None = None) -> MediaInfo:
    """Describe ``path``: container, first video and audio stream, rates, colour, rotation, duration.

    Limits (file size, streams, duration, pixels) are checked from headers before any decoding; then one
    video frame is decoded to prove the stream is playable and to read its display rotation. Costs one
    container open and the demux of a few packets.

    Raises:
        InvalidMediaError: garbage, empty or truncated input, or a video stream with no decodable frame.
        MediaLimitError: a configured limit is exceeded (too large, or a picture below ``min_dimension``).
        UnsupportedMediaError: a still image rather than a video (see :mod:`kinoray.media.validate`).
    """
    limits = limits or InputLimits()
    try:
        size = url_size(path)
    except (OSError, StorageError) as e:
        raise InvalidMediaError(f"cannot read input: {getattr(e, 'strerror', None) or e}") from e
    if size == 0:
        raise InvalidMediaError("input file is empty (0 bytes)")
    container = open_input(path)
    try:
        _check_limits(path, size, container, limits)
        videos = _video_streams(container)
        video_stream = videos[0] if videos else None
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        if video_stream is None and audio_stream is None:
            raise InvalidMediaError("file has neither a video nor an audio stream")
        validate.check_container(container, video_stream)
        container_name = container.format.name
        if container_name == "mpegts":
            _check_ts_size(path, size)
        duration = Fraction(container.duration, av.time_base) if container.duration else None
        bit_rate = container.bit_rate or None
        stream_count = len(container.streams)
        audio = _audio_info(audio_stream) if audio_stream is not None else None
        video = _video_info(container, video_stream, limits) if video_stream is not None else None
    finally:
        container.close()
    if video is not None and duration is None:
        duration = video.duration_seconds
    return MediaInfo(
        path=path,
        container=container_name,
        size_bytes=size,
        duration_seconds=duration,
        bit_rate=bit_rate,
        stream_count=stream_count,
        video=video,
        audio=audio,
    )


def _video_info(container: av.container.InputContainer, stream: av.VideoStream,
                limits: InputLimits) -> VideoStreamInfo:
    ctx = stream.codec_context
    if ctx.width <= 0 or ctx.height <= 0:
        raise InvalidMediaError("video stream declares no picture size")
    sar = _fraction(stream.sample_aspect_ratio or ctx.sample_aspect_ratio) or Fraction(1)
    # Too small to stream, coded or as displayed (rotation swaps the sides, never shrinks them): refused
    # before a frame is decoded.
    validate.check_picture_size(ctx.width, ctx.height, *_display_size(ctx.width, ctx.height, sar, 0),
                                limits.min_dimension)
    frame = _first_frame(container, stream)
    rotation = int(round(frame.rotation or 0)) % 360
    if rotation % 90:
        rotation = 0
    display_width, display_height = _display_size(ctx.width, ctx.height, sar, rotation)
    pix_fmt = ctx.pix_fmt or frame.format.name
    time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
    return VideoStreamInfo(
        index=stream.index,
        codec=ctx.name,
        profile=ctx.profile,
        width=ctx.width,
        height=ctx.height,
        display_width=display_width,
        display_height=display_height,
        rotation=rotation,
        sample_aspect_ratio=sar,
        pix_fmt=pix_fmt,
        bit_depth=_bit_depth(pix_fmt),
        color_primaries=_optional_int(frame.color_primaries),
        color_trc=_optional_int(frame.color_trc),
        colorspace=_optional_int(frame.colorspace),
        color_range=int(frame.color_range) if frame.color_range else None,
        average_rate=_fraction(stream.average_rate),
        real_rate=_fraction(stream.base_rate) or _fraction(stream.guessed_rate),
        time_base=time_base,
        start_pts=stream.start_time,
        duration_seconds=_seconds(stream.duration, time_base),
        frame_count=stream.frames or None,
    )


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    number = int(value)
    return None if number in (2,) else number  # 2 = "unspecified" for primaries/trc/matrix


def _audio_info(stream: av.AudioStream) -> AudioStreamInfo:
    ctx = stream.codec_context
    time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, ctx.sample_rate or 48000)
    if not ctx.sample_rate or not ctx.channels:
        raise InvalidMediaError("audio stream declares no sample rate or channels")
    return AudioStreamInfo(
        index=stream.index,
        codec=ctx.name,
        channels=ctx.channels,
        layout=ctx.layout.name,
        sample_rate=ctx.sample_rate,
        time_base=time_base,
        start_pts=stream.start_time,
        duration_seconds=_seconds(stream.duration, time_base),
    )
