"""Encoder sessions over PyAV codec contexts: the shared engine of the libx264, libx265, libsvtav1 and
FFmpeg-NVENC backends. Each backend only contributes its codec name and option mapping."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import av
import av.video.frame

from kinoray.encoders.base import Capability, EncoderSession, EncoderSettings
from kinoray.errors import EncoderError, EncoderUnavailableError
from kinoray.logs import native_output_to_logging
from kinoray.priority import drop_realtime

__all__ = ["PyAVEncoderBackend", "PyAVEncoderSession"]

log = logging.getLogger(__name__)

OptionBuilder = Callable[[EncoderSettings], dict[str, str]]

_PROBE_SETTINGS = EncoderSettings(
    codec="h264", width=256, height=144, frame_rate=Fraction(25), time_base=Fraction(1, 90000),
    gop_frames=25, max_bitrate=500_000, buffer_size=1_000_000,
)


class PyAVEncoderSession:
    """Only ``open`` routes native stderr itself; callers that encode for long (a chunk) wrap the whole run in
    :func:`~kinoray.logs.native_output_to_logging` once, which is far cheaper than per frame."""

    def __init__(self, ffmpeg_codec: str, codec: str, settings: EncoderSettings, options: dict[str, str]) -> None:
        self.codec_name = codec
        self.settings = settings
        try:
            ctx: Any = av.CodecContext.create(ffmpeg_codec, "w")
        except (av.FFmpegError, ValueError) as e:
            raise EncoderUnavailableError(f"{ffmpeg_codec} is not available in this FFmpeg build") from e
        ctx.width = settings.width
        ctx.height = settings.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = settings.time_base
        ctx.framerate = settings.frame_rate
        ctx.gop_size = settings.gop_frames
        ctx.max_b_frames = settings.bframes
        if settings.threads:
            ctx.thread_count = settings.threads
        ctx.flags |= av.codec.context.Flags.global_header  # parameter sets go to extradata for fMP4
        ctx.options = options
        self._ctx = ctx
        with native_output_to_logging():
            try:
                ctx.open()
            except av.FFmpegError as e:
                raise EncoderError(f"{ffmpeg_codec} refused the settings ({e.strerror or e}): {options}") from e
            finally:
                drop_realtime()  # SVT-AV1 gives this thread and its own SCHED_FIFO 99 (kinoray.priority)
        self.extradata = bytes(ctx.extradata or b"")

    def encode(self, frame: av.VideoFrame, force_idr: bool) -> list[av.Packet]:
        frame.pict_type = av.video.frame.PictureType.I if force_idr else av.video.frame.PictureType.NONE
        try:
            packets = self._ctx.encode(frame)
        except av.FFmpegError as e:
            raise EncoderError(f"{self._ctx.name} failed on frame pts={frame.pts}: {e.strerror or e}") from e
        if not self.extradata and self._ctx.extradata:
            self.extradata = bytes(self._ctx.extradata)
        return list(packets)

    def flush(self) -> list[av.Packet]:
        try:
            packets = list(self._ctx.encode(None))
        except av.FFmpegError as e:
            raise EncoderError(f"{self._ctx.name} failed while flushing: {e.strerror or e}") from e
        if self._ctx.extradata:
            self.extradata = bytes(self._ctx.extradata)
        return packets

    def close(self) -> None:
        """Release the codec context (FFmpeg frees it when the last reference goes)."""
        self.__dict__.pop("_ctx", None)


@dataclass
class PyAVEncoderBackend:
    """A backend that drives one FFmpeg encoder through PyAV."""

    name: str
    codec: str
    ffmpeg_codec: str
    build_options: OptionBuilder
    hardware: bool = False

    def open(self, settings: EncoderSettings) -> EncoderSession:
        if settings.codec != self.codec:
            raise EncoderError(f"{self.name} encodes {self.codec}, not {settings.codec}")
        return PyAVEncoderSession(self.ffmpeg_codec, self.codec, settings, self.build_options(settings))

    def probe(self) -> Capability:
        """Open a real session and encode a few frames; the reason names what failed."""
        try:
            av.codec.Codec(self.ffmpeg_codec, "w")
        except (av.FFmpegError, ValueError) as e:
            return Capability(False, f"{self.ffmpeg_codec} is not in this FFmpeg build ({e})")
        try:
            session = self.open(replace(_PROBE_SETTINGS, codec=self.codec))
            frame = av.VideoFrame(256, 144, "yuv420p")
            packets: list[av.Packet] = []
            for number in range(3):
                frame.pts = number * 3600
                packets += session.encode(frame, force_idr=number == 0)
            packets += session.flush()
            session.close()
        except Exception as e:  # noqa: BLE001 — any failure means "not usable here", with its reason
            return Capability(False, f"{self.ffmpeg_codec} session failed: {e}")
        if not packets:
            return Capability(False, f"{self.ffmpeg_codec} produced no output")
        return Capability(True, f"{self.ffmpeg_codec} opened and encoded {len(packets)} packets")
