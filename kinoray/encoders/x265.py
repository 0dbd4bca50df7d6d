"""libx265 (HEVC) through PyAV. Muxed with the ``hvc1`` sample entry so Apple players accept it."""

from __future__ import annotations

from kinoray.encoders.base import EncoderSettings
from kinoray.encoders.pyav import PyAVEncoderBackend

__all__ = ["BACKEND", "x265_options"]

DEFAULT_PRESET = "veryfast"
DEFAULT_CRF = 26


def x265_options(settings: EncoderSettings) -> dict[str, str]:
    """x265 defaults to open GOP and scene cuts; both are turned off. Its banner goes to the log at
    warning level only (``log-level``); what remains is routed through Python logging."""
    gop = settings.gop_frames
    params = [
        f"keyint={gop}", f"min-keyint={gop}", "scenecut=0", "open-gop=0",
        f"bframes={settings.bframes}", f"vbv-maxrate={settings.max_bitrate // 1000}",
        f"vbv-bufsize={settings.buffer_size // 1000}", "log-level=warning", "repeat-headers=0",
    ]
    if settings.threads:
        params += [f"pools={settings.threads}", "frame-threads=1" if settings.threads == 1 else
                   f"frame-threads={min(settings.threads, 4)}"]
    return {
        "preset": settings.preset or DEFAULT_PRESET,
        "crf": str(settings.quality if settings.quality is not None else DEFAULT_CRF),
        "forced-idr": "1",
        "x265-params": ":".join(params),
        **dict(settings.extra),
    }


BACKEND = PyAVEncoderBackend(name="libx265", codec="hevc", ffmpeg_codec="libx265", build_options=x265_options)
