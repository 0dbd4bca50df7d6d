"""Static renditions without re-encoding: packaged CMAF tracks (``init.mp4`` + ``seg_NNNNN.m4s``) remuxed into
one progressive-download MP4 (``moov`` before ``mdat``), or an audio-only M4A.

The packets are copied as they are (PyAV ``add_stream_from_template``: same codec parameters, no decoder or
encoder is opened), interleaved by decode time, so an MP4 of a 2-hour rung costs a read and a write of its
bytes. Each track is read as its init segment followed by its media segments, the fragmented MP4 a player
would assemble.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from kinoray.errors import TranscodeError
from kinoray.logs import native_output_to_logging
from kinoray.media.package import INIT_NAME

__all__ = ["StaticFile", "join_track", "probe_static", "remux_static"]


@dataclass(frozen=True)
class StaticFile:
    """What a written static rendition holds, read back from the file."""

    width: int  # 0 without video
    height: int
    duration_seconds: float
    size: int  # bytes
    has_video: bool
    has_audio: bool

    @property
    def bitrate(self) -> int:
        """Bits per second of the whole file."""
        return round(self.size * 8 / self.duration_seconds) if self.duration_seconds > 0 else 0


def join_track(track_dir: Path, out: Path) -> Path:
    """``track_dir``'s init segment and media segments, in order, as one fragmented MP4 at ``out``."""
    segments = sorted(track_dir.glob("seg_*.m4s"))
    if not (track_dir / INIT_NAME).is_file() or not segments:
        raise TranscodeError(f"{track_dir.name}: no packaged track to remux (init.mp4 and segments)")
    with out.open("wb") as joined:
        for part in (track_dir / INIT_NAME, *segments):
            with part.open("rb") as piece:
                shutil.copyfileobj(piece, joined, 1 << 20)
    return out


def remux_static(tracks: Sequence[Path], out: Path) -> StaticFile:
    """Copy the first stream of each fragmented MP4 in ``tracks`` (a video track and/or the audio) into a
    faststart MP4 at ``out`` (written beside it, then renamed). ``.m4a`` names get the ``ipod`` muxer (M4A
    brand), others ``mp4``.

    Raises:
        TranscodeError: a track cannot be read or muxed (nothing is left at ``out``).
    """
    if not tracks:
        raise TranscodeError("a static rendition needs at least one track")
    tmp = out.with_name(out.name + ".tmp")
    inputs: list[av.container.InputContainer] = []
    try:
        with native_output_to_logging():
            inputs = [av.open(str(track), "r") for track in tracks]
            muxer = "ipod" if out.suffix == ".m4a" else "mp4"
            with av.open(str(tmp), "w", format=muxer, options={"movflags": "+faststart"}) as output:
                pairs = []
                for container in inputs:
                    stream = container.streams[0]
                    pairs.append((container, stream, output.add_stream_from_template(stream)))
                iterators = [_packets(container, stream) for container, stream, _ in pairs]
                heads = [next(iterator, None) for iterator in iterators]
                while any(head is not None for head in heads):
                    # by decode time across tracks, so the muxer buffers a few packets only
                    position = min((i for i, head in enumerate(heads) if head is not None),
                                   key=lambda i: _dts_seconds(heads[i]))  # type: ignore[arg-type]
                    packet = heads[position]
                    assert packet is not None
                    packet.stream = pairs[position][2]
                    output.mux(packet)
                    heads[position] = next(iterators[position], None)
        os.replace(tmp, out)
    except (av.FFmpegError, OSError, ValueError, IndexError) as error:
        tmp.unlink(missing_ok=True)
        raise TranscodeError(f"could not remux {out.name}: {error}") from error
    finally:
        for container in inputs:
            container.close()
    return probe_static(out)


def _packets(container: av.container.InputContainer, stream: av.stream.Stream) -> Iterator[av.Packet]:
    for packet in container.demux(stream):
        if packet.size:  # the demuxer's end-of-stream flush packet carries nothing
            yield packet


def _dts_seconds(packet: av.Packet) -> Fraction:
    ticks = packet.dts if packet.dts is not None else (packet.pts or 0)
    return ticks * Fraction(packet.time_base) if packet.time_base else Fraction(ticks)


def probe_static(path: Path) -> StaticFile:
    """Dimensions, duration and size of a static rendition (headers only)."""
    try:
        with av.open(str(path), "r") as container:
            video = next(iter(container.streams.video), None)
            audio = next(iter(container.streams.audio), None)
            duration = Fraction(container.duration, av.time_base) if container.duration else Fraction(0)
            return StaticFile(width=video.codec_context.width if video else 0,
                              height=video.codec_context.height if video else 0,
                              duration_seconds=float(duration), size=path.stat().st_size,
                              has_video=video is not None, has_audio=audio is not None)
    except (av.FFmpegError, OSError) as error:
        raise TranscodeError(f"could not read {path.name}: {error}") from error
