"""NVIDIA NVENC encode and NVDEC decode, both optional and probed at run time.

Encode goes through FFmpeg's ``h264_nvenc``/``hevc_nvenc``/``av1_nvenc`` (bundled in PyAV's wheel): the same
session engine as the CPU backends, so chunk outputs are muxed identically. The probe opens a real session,
which fails cleanly on machines without a driver and on NVENC-less data-centre GPUs (H100/H200/A100), where
:func:`kinoray.encoders.select_encoder` then falls back to a CPU encoder.

NVDEC decode is offered through PyAV's CUDA hwaccel (:func:`nvdec_hwaccel`); PyNvVideoCodec is imported
lazily only to report the driver's capabilities (:func:`pynvvideocodec_status`), never at import time.
"""

from __future__ import annotations

import functools
import importlib
import io
from typing import Any

import av

from kinoray.encoders.base import EncoderSettings
from kinoray.encoders.pyav import PyAVEncoderBackend

__all__ = ["BACKENDS", "nvdec_hwaccel", "nvenc_options", "pynvvideocodec_status"]

DEFAULT_PRESET = "p4"


def nvenc_options(settings: EncoderSettings) -> dict[str, str]:
    """Constant-quality VBR capped at maxrate; ``forced-idr`` + ``strict_gop`` + ``no-scenecut`` keep IDRs on
    the segment grid and nowhere else."""
    options = {
        "preset": settings.preset or DEFAULT_PRESET,
        "rc": "vbr",
        "cq": str(settings.quality if settings.quality is not None else 25),
        "b": "0",
        "maxrate": str(settings.max_bitrate),
        "bufsize": str(settings.buffer_size),
        "forced-idr": "1",
        "strict_gop": "1",
        "no-scenecut": "1",
        "g": str(settings.gop_frames),
        **dict(settings.extra),
    }
    if settings.codec != "av1":
        options["bf"] = str(min(settings.bframes, 3))
    return options


BACKENDS = {
    codec: PyAVEncoderBackend(
        name="nvenc", codec=codec, ffmpeg_codec=f"{prefix}_nvenc", build_options=nvenc_options, hardware=True
    )
    for codec, prefix in (("h264", "h264"), ("hevc", "hevc"), ("av1", "av1"))
}


@functools.cache
def pynvvideocodec_status() -> tuple[bool, str]:
    """Whether PyNvVideoCodec imports here (it needs libnvidia-encode/libnvcuvid from the driver)."""
    try:
        module = importlib.import_module("PyNvVideoCodec")
    except ImportError:
        return False, "PyNvVideoCodec is not installed (pip install 'kinoray[gpu]')"
    except Exception as e:  # noqa: BLE001 — its import probes the driver and raises RuntimeError without one
        return False, f"PyNvVideoCodec cannot load the NVIDIA driver: {e}"
    return True, f"PyNvVideoCodec {getattr(module, '__version__', '?')} loaded"


@functools.cache
def nvdec_hwaccel() -> Any | None:
    """A PyAV ``HWAccel`` for CUDA decode when a real NVDEC decode works here, else None.

    Compiled-in CUDA support says nothing about a device being present, so the probe decodes a tiny
    generated H.264 clip on the GPU (software fallback off) and caches the verdict for the process.
    """
    try:
        import av.codec.hwaccel as hwaccel

        if "cuda" not in hwaccel.hwdevices_available():
            return None
        sample = _tiny_h264()
        probe = hwaccel.HWAccel(device_type="cuda", allow_software_fallback=False)
        with av.open(io.BytesIO(sample), "r", format="mp4", hwaccel=probe) as container:
            if next(container.decode(video=0), None) is None:
                return None
        return hwaccel.HWAccel(device_type="cuda", allow_software_fallback=True)
    except Exception:  # noqa: BLE001 — no driver, no device, or no NVDEC: all mean "decode on CPU"
        return None


def _tiny_h264() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 256, 144, "yuv420p"
        frame = av.VideoFrame(256, 144, "yuv420p")
        for number in range(2):
            frame.pts = number
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
