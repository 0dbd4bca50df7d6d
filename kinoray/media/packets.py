"""A tiny, exact packet store for encoded chunk outputs (the stitch input).

Each rendition of each chunk is written as two files: ``NAME.bin`` (the packets' bytes back to back) and
``NAME.json`` (stream parameters, codec extradata and one row per packet: pts, dts, duration, keyframe,
size, all in the stream's integer time base). Containers were tried and rejected for this role: NUT rewrites
B-frame timestamps and Matroska rounds them to milliseconds. The packets are remuxed by FFmpeg's muxers at
package time, never concatenated as raw bitstreams.

Both files are written to temporary names and renamed into place, ``.json`` last, so a reader that sees the
``.json`` sees a complete chunk, and a retried chunk simply replaces it.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

__all__ = ["PacketRecord", "PacketStoreReader", "PacketStoreWriter", "StreamParameters"]


@dataclass(frozen=True)
class StreamParameters:
    codec: str  # FFmpeg codec name of the bitstream: h264, hevc, av1, aac
    time_base: Fraction
    extradata: bytes
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "time_base": str(self.time_base),
            "extradata": base64.b64encode(self.extradata).decode(),
            "width": self.width,
            "height": self.height,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamParameters:
        return cls(
            codec=data["codec"],
            time_base=Fraction(data["time_base"]),
            extradata=base64.b64decode(data["extradata"]),
            width=data["width"],
            height=data["height"],
            sample_rate=data["sample_rate"],
            channels=data["channels"],
        )


@dataclass(frozen=True)
class PacketRecord:
    pts: int
    dts: int
    duration: int
    keyframe: bool
    data: bytes

    def to_packet(self, stream: av.stream.Stream) -> av.Packet:
        packet = av.Packet(self.data)
        packet.pts = self.pts
        packet.dts = self.dts
        packet.duration = self.duration
        packet.is_keyframe = self.keyframe
        if stream.time_base is not None:
            packet.time_base = stream.time_base
        packet.stream = stream
        return packet


class PacketStoreWriter:
    """Append packets, then :meth:`commit`. Use as a context manager; an exception discards the output."""

    def __init__(self, base: Path, params: StreamParameters) -> None:
        self.base = base
        self.params = params
        self.rows: list[list[int]] = []
        self.bytes_written = 0
        base.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_bin = base.with_name(base.name + f".bin.tmp{os.getpid()}")
        self._file = open(self._tmp_bin, "wb")

    def __enter__(self) -> PacketStoreWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def write(self, packet: av.Packet, duration: int) -> None:
        data = bytes(packet)
        if packet.pts is None or packet.dts is None:
            raise ValueError("packet without timestamps cannot be stored")
        self._file.write(data)
        self.rows.append([packet.pts, packet.dts, duration, int(packet.is_keyframe), len(data)])
        self.bytes_written += len(data)

    def commit(self) -> None:
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp_bin, self.base.with_suffix(".bin"))
        tmp_json = self.base.with_name(self.base.name + f".json.tmp{os.getpid()}")
        tmp_json.write_text(json.dumps({"stream": self.params.to_json(), "packets": self.rows}))
        os.replace(tmp_json, self.base.with_suffix(".json"))

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp_bin.unlink(missing_ok=True)


class PacketStoreReader:
    def __init__(self, base: Path) -> None:
        meta = json.loads(base.with_suffix(".json").read_text())
        self.base = base
        self.params = StreamParameters.from_json(meta["stream"])
        self.rows: list[list[int]] = meta["packets"]

    @property
    def total_bytes(self) -> int:
        return sum(row[4] for row in self.rows)

    def __iter__(self) -> Iterator[PacketRecord]:
        with open(self.base.with_suffix(".bin"), "rb") as source:
            for pts, dts, duration, key, size in self.rows:
                yield PacketRecord(pts, dts, duration, bool(key), source.read(size))
