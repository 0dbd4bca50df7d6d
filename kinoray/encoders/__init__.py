"""Video encoder backends behind one protocol, a registry and a run-time capability probe."""

from kinoray.encoders.base import Capability, EncoderBackend, EncoderSession, EncoderSettings
from kinoray.encoders.registry import (
    ENCODER_FALLBACKS,
    EncoderChoice,
    available_encoders,
    get_backend,
    probe_backend,
    select_encoder,
)

__all__ = [
    "ENCODER_FALLBACKS",
    "Capability",
    "EncoderBackend",
    "EncoderChoice",
    "EncoderSession",
    "EncoderSettings",
    "available_encoders",
    "get_backend",
    "probe_backend",
    "select_encoder",
]
