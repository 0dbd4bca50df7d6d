"""FLV, the container RTMP's media messages come from: a publisher's audio, video and metadata messages written
back as an FLV byte stream (Adobe's FLV file format, version 10), which FFmpeg's FLV demuxer (through PyAV)
reads like a file. The tags' bodies are the RTMP messages' payloads unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["AUDIO", "SCRIPT", "VIDEO", "FlvTag", "flv_header"]

AUDIO, VIDEO, SCRIPT = 8, 9, 18


@dataclass(frozen=True, slots=True)
class FlvTag:
    """One tag: its type (:data:`AUDIO`, :data:`VIDEO`, :data:`SCRIPT`), its timestamp (ms, 32 bits, as RTMP
    counts) and its body."""

    kind: int
    timestamp: int
    body: bytes

    def __post_init__(self) -> None:
        if self.kind not in (AUDIO, VIDEO, SCRIPT):
            raise ValueError(f"FLV tag type {self.kind} is not audio, video or script data")
        if len(self.body) >= 1 << 24:
            raise ValueError("an FLV tag body is at most 16 MiB")

    @property
    def is_keyframe(self) -> bool:
        """A video tag whose frame type is 1 (a keyframe, for H.264 an IDR access unit or its sequence header)."""
        return self.kind == VIDEO and bool(self.body) and self.body[0] >> 4 == 1

    def to_bytes(self) -> bytes:
        """The tag followed by its PreviousTagSize field."""
        timestamp = self.timestamp & 0xFFFFFFFF
        header = struct.pack(">B", self.kind) + len(self.body).to_bytes(3, "big") \
            + (timestamp & 0xFFFFFF).to_bytes(3, "big") + bytes([timestamp >> 24]) + b"\x00\x00\x00"
        return header + self.body + struct.pack(">I", 11 + len(self.body))


def flv_header(*, audio: bool = True, video: bool = True) -> bytes:
    """The 9-byte FLV header and the first PreviousTagSize (0)."""
    flags = (0x04 if audio else 0) | (0x01 if video else 0)
    return b"FLV\x01" + bytes([flags]) + struct.pack(">I", 9) + struct.pack(">I", 0)
