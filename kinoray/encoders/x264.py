"""libx264 (H.264) through PyAV: capped CRF, fixed closed GOP with an IDR at every segment start."""

from __future__ import annotations

from kinoray.encoders.base import EncoderSettings
from kinoray.encoders.pyav import PyAVEncoderBackend

__all__ = ["BACKEND", "x264_options"]

DEFAULT_PRESET = "veryfast"
DEFAULT_CRF = 23


def x264_options(settings: EncoderSettings) -> dict[str, str]:
    """``keyint=min-keyint=gop`` with ``scenecut=0`` leaves IDRs only on the grid (x264 clamps min-keyint to
    keyint/2+1, which is harmless without scene cuts); ``forced-idr`` turns the I-frame we request at each
    segment start into an IDR; ``open-gop=0`` keeps every GOP closed."""
    gop = settings.gop_frames
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:bframes={settings.bframes}"
    if settings.threads:
        params += f":threads={settings.threads}"
        if settings.threads == 1:
            params += ":sliced-threads=0:lookahead-threads=1"
    return {
        "preset": settings.preset or DEFAULT_PRESET,
        "crf": str(settings.quality if settings.quality is not None else DEFAULT_CRF),
        "maxrate": str(settings.max_bitrate),
        "bufsize": str(settings.buffer_size),
        "forced-idr": "1",
        "x264-params": params,
        **dict(settings.extra),
    }


BACKEND = PyAVEncoderBackend(name="libx264", codec="h264", ffmpeg_codec="libx264", build_options=x264_options)
