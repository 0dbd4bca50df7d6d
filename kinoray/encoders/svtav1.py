"""libsvtav1 (AV1) through PyAV: capped CRF (``mbr``), closed key frames on the segment grid."""

from __future__ import annotations

import os

from kinoray.encoders.base import EncoderSettings
from kinoray.encoders.pyav import PyAVEncoderBackend

__all__ = ["BACKEND", "svtav1_options"]

DEFAULT_PRESET = "10"
DEFAULT_CRF = 35

# SVT-AV1 prints its configuration banner from C; keep warnings and errors only (they are routed to logging).
os.environ.setdefault("SVT_LOG", "2")


def svtav1_options(settings: EncoderSettings) -> dict[str, str]:
    """``keyint`` puts a key frame every segment; ``irefresh-type=2`` makes them closed (IDR-like);
    ``scd=0`` forbids scene-change key frames off the grid; ``mbr`` caps the CRF bitrate."""
    params = [
        f"keyint={settings.gop_frames}", "irefresh-type=2", "scd=0",
        f"mbr={settings.max_bitrate // 1000}", f"buf-sz={max(1, settings.buffer_size * 1000 // max(1, settings.max_bitrate))}",
    ]
    if settings.threads:
        params.append(f"lp={settings.threads}")
    return {
        "preset": settings.preset or DEFAULT_PRESET,
        "crf": str(settings.quality if settings.quality is not None else DEFAULT_CRF),
        "svtav1-params": ":".join(params),
        **dict(settings.extra),
    }


BACKEND = PyAVEncoderBackend(name="libsvtav1", codec="av1", ffmpeg_codec="libsvtav1", build_options=svtav1_options)
