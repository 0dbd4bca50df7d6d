"""Encoder registry, cached capability probes and ``auto`` selection with visible fallbacks."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from kinoray.encoders import nvenc, svtav1, x264, x265
from kinoray.encoders.base import Capability, EncoderBackend
from kinoray.errors import EncoderUnavailableError

__all__ = ["ENCODER_FALLBACKS", "EncoderChoice", "available_encoders", "get_backend", "probe_backend", "select_encoder"]

log = logging.getLogger(__name__)

ENCODER_FALLBACKS = Counter(
    "kinoray_encoder_fallbacks_total",
    "Encodes that ran on another backend than the one requested or preferred",
    ["codec", "requested", "used"],
)

#: (codec, backend name) -> backend. CPU backends are always registered; nvenc is probed.
_REGISTRY: dict[tuple[str, str], EncoderBackend] = {
    ("h264", "libx264"): x264.BACKEND,
    ("hevc", "libx265"): x265.BACKEND,
    ("av1", "libsvtav1"): svtav1.BACKEND,
    **{(codec, "nvenc"): backend for codec, backend in nvenc.BACKENDS.items()},
}
_CPU_DEFAULT = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}
#: ``auto`` tries these in order
_AUTO_ORDER = ("nvenc", "cpu")


@dataclass(frozen=True)
class EncoderChoice:
    """The backend that will run, and the one it replaced (if any) with the reason."""

    backend: EncoderBackend
    requested: str
    fallback_from: str | None = None
    fallback_reason: str | None = None

    @property
    def name(self) -> str:
        return self.backend.name


def get_backend(codec: str, name: str) -> EncoderBackend:
    try:
        return _REGISTRY[(codec, name)]
    except KeyError:
        known = sorted({n for c, n in _REGISTRY if c == codec})
        raise EncoderUnavailableError(f"no encoder {name!r} for {codec}; known: {known}") from None


@functools.cache
def probe_backend(codec: str, name: str) -> Capability:
    """Capability of one backend on this machine (a real session is opened once per process)."""
    return get_backend(codec, name).probe()


def available_encoders() -> dict[str, Capability]:
    return {f"{codec}/{name}": probe_backend(codec, name) for codec, name in sorted(_REGISTRY)}


def select_encoder(codec: str, requested: str = "auto",
                   probe: Callable[[str, str], Capability] | None = None) -> EncoderChoice:
    """Pick the backend for ``codec``.

    ``auto`` prefers NVENC and falls back to the CPU encoder when NVENC's probe fails (no GPU, no driver,
    or an H100/A100-class GPU without NVENC); the fallback is logged and counted. A named backend must be
    usable or :class:`EncoderUnavailableError` is raised — no silent substitution.

    ``probe`` answers "can (codec, backend) run?"; by default this process's own probe. The cluster passes one
    that asks its workers, so the choice reflects the machines that will encode, not the coordinator's.
    """
    probe = probe or probe_backend
    if codec not in _CPU_DEFAULT:
        raise EncoderUnavailableError(f"unknown codec {codec!r}; choose one of {sorted(_CPU_DEFAULT)}")
    if requested != "auto":
        capability = probe(codec, requested)
        if not capability.available:
            raise EncoderUnavailableError(f"encoder {requested} cannot run here: {capability.reason}")
        return EncoderChoice(get_backend(codec, requested), requested)
    nvenc_capability = probe(codec, "nvenc")
    if nvenc_capability.available:
        return EncoderChoice(get_backend(codec, "nvenc"), requested)
    cpu = _CPU_DEFAULT[codec]
    capability = probe(codec, cpu)
    if not capability.available:
        raise EncoderUnavailableError(f"no usable {codec} encoder: nvenc: {nvenc_capability.reason}; "
                                      f"{cpu}: {capability.reason}")
    log.info("encoder fallback", extra={"codec": codec, "from": "nvenc", "to": cpu,
                                         "reason": nvenc_capability.reason})
    ENCODER_FALLBACKS.labels(codec=codec, requested="nvenc", used=cpu).inc()
    return EncoderChoice(get_backend(codec, cpu), requested, fallback_from="nvenc",
                         fallback_reason=nvenc_capability.reason)
