"""The encoder protocol every backend implements, and the settings a session is opened with."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol, runtime_checkable

import av

__all__ = ["Capability", "EncoderBackend", "EncoderSession", "EncoderSettings"]

CODECS = ("h264", "hevc", "av1")


@dataclass(frozen=True)
class EncoderSettings:
    """Everything that determines an encode. Identical settings give identical output on every chunk."""

    codec: str
    width: int
    height: int
    frame_rate: Fraction
    time_base: Fraction  # 1/timescale of the output track
    gop_frames: int  # an IDR starts every gop_frames frames (the segment length); no other keyframes
    max_bitrate: int
    buffer_size: int
    preset: str | None = None  # None: the backend's default
    quality: int | None = None  # CRF/CQ; None: the backend's default
    threads: int = 1  # 0 lets the encoder decide
    bframes: int = 3
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, got {self.codec!r}")
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError("encoder dimensions must be positive and even")
        if self.gop_frames <= 0:
            raise ValueError("gop_frames must be positive")


@dataclass(frozen=True)
class Capability:
    available: bool
    reason: str  # why not, or what was probed


@runtime_checkable
class EncoderSession(Protocol):
    """One open encode: frames in (``yuv420p``, pts in ``settings.time_base``), packets out."""

    codec_name: str  # bitstream codec for muxing: h264 / hevc / av1
    extradata: bytes  # avcC / hvcC / av1C payload for the container

    def encode(self, frame: av.VideoFrame, force_idr: bool) -> list[av.Packet]: ...

    def flush(self) -> list[av.Packet]: ...

    def close(self) -> None: ...


@runtime_checkable
class EncoderBackend(Protocol):
    name: str  # registry key: libx264, libx265, libsvtav1, nvenc
    codec: str  # h264 / hevc / av1
    hardware: bool

    def probe(self) -> Capability:
        """Open a real (tiny) encode session; cached by the registry."""
        ...

    def open(self, settings: EncoderSettings) -> EncoderSession: ...
