"""Stitch and package: chunk packet stores → CMAF tracks (one init segment + fMP4 media segments per
rendition), HLS and DASH manifests over the same files, and a faststart MP4 of the top rendition.

Segments are written by FFmpeg's DASH muxer (through PyAV), one muxer per track. For video it is told to cut
at every keyframe, and the encoders put keyframes exactly on the segment grid and nowhere else, so segment
``k`` holds exactly the plan's frames ``[k·F, (k+1)·F)``. Audio is cut by time near the same boundaries,
and its segment timings are read back from the written files.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from kinoray.errors import TranscodeError
from kinoray.logs import native_output_to_logging
from kinoray.media.codecs import CONFIGURATION_BOXES, codec_string, configuration_record
from kinoray.media.packets import PacketRecord, PacketStoreReader, StreamParameters
from kinoray.priority import drop_realtime

__all__ = ["SegmentInfo", "Track", "add_packet_stream", "write_cmaf_track", "write_static_mp4"]

log = logging.getLogger(__name__)

INIT_NAME = "init.mp4"
SEGMENT_TEMPLATE = "seg_$Number%05d$.m4s"
FIRST_SEGMENT_NUMBER = 1
_MUXING_ENCODERS = {  # opened (cheaply) only so PyAV has a codec context to carry our parameters
    "h264": ("libx264", {"preset": "ultrafast", "threads": "1"}),
    "hevc": ("libx265", {"preset": "ultrafast", "x265-params": "log-level=error:pools=1:frame-threads=1"}),
    "av1": ("libsvtav1", {"preset": "12", "svtav1-params": "lp=1"}),
    "aac": ("aac", {}),
}


def segment_file_name(number: int) -> str:
    return SEGMENT_TEMPLATE.replace("$Number%05d$", f"{number:05d}")


@dataclass(frozen=True)
class SegmentInfo:
    uri: str  # relative to the track directory
    start: int  # presentation time of the first sample, in the track timescale
    duration: int  # in the track timescale
    bytes: int

    def seconds(self, timescale: int) -> Fraction:
        return Fraction(self.duration, timescale)


@dataclass(frozen=True)
class Track:
    """One packaged CMAF track (a video rendition or the audio), as the manifests need it."""

    kind: str  # "video" | "audio"
    name: str  # directory name, also the DASH Representation id
    codec: str  # h264 / hevc / av1 / aac
    codec_string: str  # RFC 6381
    timescale: int
    segments: tuple[SegmentInfo, ...]
    width: int = 0
    height: int = 0
    frame_rate: Fraction | None = None
    channels: int = 0
    sample_rate: int = 0

    @property
    def duration(self) -> Fraction:
        return Fraction(sum(s.duration for s in self.segments), self.timescale)

    @property
    def peak_bandwidth(self) -> int:
        """Largest segment bitrate in bits/s (HLS BANDWIDTH)."""
        return max(round(s.bytes * 8 * self.timescale / s.duration) for s in self.segments if s.duration)

    @property
    def average_bandwidth(self) -> int:
        """Total bytes over total duration in bits/s (HLS AVERAGE-BANDWIDTH)."""
        total = sum(s.bytes for s in self.segments)
        return round(total * 8 / self.duration) if self.duration else 0

    @property
    def init_uri(self) -> str:
        return INIT_NAME


def add_packet_stream(container: av.container.OutputContainer, params: StreamParameters) -> av.stream.Stream:
    """A muxer stream that carries already-encoded packets described by ``params``.

    PyAV needs an open codec context for a new output stream; a cheap encoder of the same codec is opened
    and its parameter sets are then replaced with the real ones, so the container headers (avcC/hvcC/av1C,
    esds) describe the packets actually muxed.
    """
    encoder_name, options = _MUXING_ENCODERS[params.codec]
    with native_output_to_logging():
        if params.codec == "aac":
            stream = container.add_stream(encoder_name, rate=params.sample_rate)
            ctx: Any = stream.codec_context
            ctx.layout = "mono" if params.channels == 1 else "stereo"
            ctx.format = "fltp"
        else:
            stream = container.add_stream(encoder_name, options=options)
            ctx = stream.codec_context
            ctx.width, ctx.height, ctx.pix_fmt = params.width, params.height, "yuv420p"
        stream.time_base = params.time_base
        ctx.time_base = params.time_base
        ctx.flags |= av.codec.context.Flags.global_header
        ctx.open()
    drop_realtime()  # SVT-AV1 makes the opening thread real-time (kinoray.priority)
    ctx.extradata = params.extradata
    if params.codec == "hevc":
        ctx.codec_tag = "hvc1"  # parameter sets in the sample entry; what Apple players require
    return stream


def _mux_all(container: av.container.OutputContainer, stream: av.stream.Stream,
             records: Iterable[PacketRecord]) -> int:
    count = 0
    for record in records:
        container.mux(record.to_packet(stream))
        count += 1
    return count


def _records(stores: Iterable[str | Path]) -> Iterator[PacketRecord]:
    for store in stores:
        yield from PacketStoreReader(Path(store))


def _average_bitrate(stores: Sequence[str | Path]) -> int:
    """Mean bitrate of the packets (the DASH muxer wants one for its manifest; it also quiets a warning)."""
    total_bytes = total_ticks = 0
    time_base = Fraction(1)
    for store in stores:
        reader = PacketStoreReader(Path(store))
        time_base = reader.params.time_base
        total_bytes += reader.total_bytes
        total_ticks += sum(row[2] for row in reader.rows)
    return int(total_bytes * 8 / (total_ticks * time_base)) if total_ticks else 0


def write_cmaf_track(
    stores: Sequence[str | Path],
    directory: Path,
    *,
    cut_every_keyframe: bool,
    segment_seconds: Fraction,
) -> tuple[StreamParameters, list[Path]]:
    """Remux the packets of ``stores`` (in order) into ``directory/init.mp4`` + ``seg_NNNNN.m4s``.

    ``cut_every_keyframe`` is for video, whose keyframes are the segment grid; audio is cut every
    ``segment_seconds``. Returns the stream parameters and the segment files in order.
    """
    if not stores:
        raise TranscodeError(f"no packets to package into {directory.name}")
    params = PacketStoreReader(Path(stores[0])).params
    directory.mkdir(parents=True, exist_ok=True)
    scratch_manifest = directory / ".muxer.mpd"
    # A duration far below one frame makes the muxer cut at every keyframe (its threshold is cumulative).
    seg_duration = "0.000001" if cut_every_keyframe else f"{float(segment_seconds):.6f}"
    container = av.open(
        str(scratch_manifest), "w", format="dash",
        options={"seg_duration": seg_duration, "init_seg_name": INIT_NAME, "media_seg_name": SEGMENT_TEMPLATE,
                 "use_template": "1", "use_timeline": "1", "single_file": "0", "streaming": "0",
                 "remove_at_exit": "0", "window_size": "0", "dash_segment_type": "mp4"},
    )
    try:
        stream = add_packet_stream(container, params)
        stream.codec_context.bit_rate = _average_bitrate(stores)
        with native_output_to_logging():
            _mux_all(container, stream, _records(stores))
    finally:
        with native_output_to_logging():
            container.close()
    scratch_manifest.unlink(missing_ok=True)
    segments = sorted(directory.glob("seg_*.m4s"))
    if not (directory / INIT_NAME).exists() or not segments:
        raise TranscodeError(f"muxer wrote no CMAF segments for {directory.name}")
    expected = [directory / segment_file_name(FIRST_SEGMENT_NUMBER + i) for i in range(len(segments))]
    if segments != expected:
        raise TranscodeError(f"segment files of {directory.name} are not numbered consecutively")
    return params, segments


def read_segment_timing(directory: Path, segment: Path) -> tuple[int, int, int]:
    """(first pts, total duration, timescale) of one media segment, read back through FFmpeg's demuxer."""
    data = (directory / INIT_NAME).read_bytes() + segment.read_bytes()
    with av.open(io.BytesIO(data), "r", format="mp4") as container:
        stream = container.streams[0]
        timescale = Fraction(stream.time_base).denominator if stream.time_base else 0
        first: int | None = None
        last_end = 0
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            first = packet.pts if first is None else min(first, packet.pts)
            last_end = max(last_end, packet.pts + (packet.duration or 0))
    if first is None:
        raise TranscodeError(f"segment {segment.name} holds no samples")
    return first, last_end - first, timescale


def write_static_mp4(path: Path, video_stores: Sequence[str | Path], audio_store: str | Path | None) -> None:
    """A progressive-download MP4 (``moov`` first) with the given video packets and the audio."""
    tmp = path.with_name(path.name + ".tmp")
    container = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        sources: list[tuple[av.stream.Stream, Iterator[PacketRecord], Fraction]] = []
        if video_stores:
            params = PacketStoreReader(Path(video_stores[0])).params
            sources.append((add_packet_stream(container, params), _records(video_stores), params.time_base))
        if audio_store is not None:
            params = PacketStoreReader(Path(audio_store)).params
            sources.append((add_packet_stream(container, params), _records([audio_store]), params.time_base))
        heads: list[PacketRecord | None] = [next(iterator, None) for _, iterator, _ in sources]
        with native_output_to_logging():
            while any(head is not None for head in heads):
                # Interleave by decode time so the muxer never buffers more than a few packets.
                position = min((i for i, h in enumerate(heads) if h is not None),
                               key=lambda i: heads[i].dts * sources[i][2])  # type: ignore[union-attr]
                stream, iterator, _ = sources[position]
                container.mux(heads[position].to_packet(stream))  # type: ignore[union-attr]
                heads[position] = next(iterator, None)
    finally:
        with native_output_to_logging():
            container.close()
    os.replace(tmp, path)


def _configuration(directory: Path, params: StreamParameters) -> bytes:
    box = CONFIGURATION_BOXES.get(params.codec)
    if box is None:
        return params.extradata
    return configuration_record((directory / INIT_NAME).read_bytes(), box)


def build_track(
    kind: str,
    name: str,
    directory: Path,
    params: StreamParameters,
    segment_files: list[Path],
    *,
    timescale: int,
    known_durations: list[int] | None = None,
    frame_rate: Fraction | None = None,
) -> Track:
    """Describe a written track: segment sizes from disk, timings from the plan (video) or read back."""
    segments = []
    start = 0
    for position, segment in enumerate(segment_files):
        if known_durations is not None:
            duration = known_durations[position]
            first = start
        else:
            first, duration, read_timescale = read_segment_timing(directory, segment)
            if read_timescale and read_timescale != timescale:
                first = first * timescale // read_timescale
                duration = duration * timescale // read_timescale
        segments.append(SegmentInfo(uri=segment.name, start=first, duration=duration, bytes=segment.stat().st_size))
        start = first + duration
    return Track(
        kind=kind,
        name=name,
        codec=params.codec,
        codec_string=codec_string(params.codec, _configuration(directory, params)),
        timescale=timescale,
        segments=tuple(segments),
        width=params.width,
        height=params.height,
        frame_rate=frame_rate,
        channels=params.channels,
        sample_rate=params.sample_rate,
    )
