"""Audio: decoded and encoded once per asset (never per chunk), on the video's timeline.

Loudness normalization (Mux's ``normalize_audio``) runs FFmpeg's ``loudnorm`` filter (EBU R128) through a PyAV
filter graph on the kept samples, before the encoder: integrated loudness :data:`LOUDNESS_TARGET_LUFS`
(-24 LUFS, ATSC A/85; Mux does not publish its target), true peak at most -2 dBTP, loudness range 7 LU — the
filter's own defaults. One pass in the filter's dynamic mode (a 3 s window with look-ahead), so the asset is
decoded once; a -4.2 LUFS noise input and a -67.7 LUFS tone land at -23.7 and -24.0 LUFS by FFmpeg's
``ebur128`` on the delivered AAC.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from kinoray.errors import InvalidMediaError
from kinoray.media.packets import PacketStoreWriter, StreamParameters
from kinoray.media.probe import AudioStreamInfo, corrupt_packet_error, open_input, stream_at

__all__ = ["LOUDNESS_TARGET_LUFS", "AudioResult", "encode_audio", "output_audio_format"]

log = logging.getLogger(__name__)

_KEPT_RATES = (44100, 48000)
#: Integrated loudness ``normalize_audio`` aims at (LUFS), with loudnorm's true-peak and range limits.
LOUDNESS_TARGET_LUFS = -24
_LOUDNORM = f"I={LOUDNESS_TARGET_LUFS}:TP=-2:LRA=7"


@dataclass(frozen=True)
class AudioResult:
    store: str
    codec: str  # "aac"
    channels: int
    sample_rate: int
    bitrate: int
    samples: int  # encoded samples, padding excluded
    packets: int
    bytes: int

    @property
    def duration_seconds(self) -> Fraction:
        return Fraction(self.samples, self.sample_rate)


def output_audio_format(audio: AudioStreamInfo) -> tuple[int, str, int]:
    """(channels, layout, rate): mono stays mono, everything else becomes stereo (5.1 is downmixed);
    44.1 and 48 kHz are kept, other rates become 48 kHz."""
    channels = 1 if audio.channels == 1 else 2
    rate = audio.sample_rate if audio.sample_rate in _KEPT_RATES else 48000
    return channels, "mono" if channels == 1 else "stereo", rate


def encode_audio(
    path: str,
    audio: AudioStreamInfo,
    store: Path,
    *,
    origin_seconds: Fraction | None,
    duration_seconds: Fraction | None,
    bitrate: int = 128_000,
    normalize: bool = False,
) -> AudioResult:
    """Encode the first audio stream of ``path`` to AAC-LC into the packet store at ``store``.

    With a video timeline (``origin_seconds``/``duration_seconds`` of the video output), audio before the
    origin is cut, a late start is padded with silence, and the end is cut or padded so the audio lasts
    exactly as long as the video. Without one (audio-only assets) the whole stream is kept. ``normalize``
    passes the kept samples through ``loudnorm`` (see the module docstring).
    """
    channels, layout, rate = output_audio_format(audio)
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate = rate
    encoder.layout = layout
    encoder.format = "fltp"
    encoder.bit_rate = bitrate
    encoder.time_base = Fraction(1, rate)
    encoder.flags |= av.codec.context.Flags.global_header
    encoder.open()
    frame_size = encoder.frame_size or 1024
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    total_samples = round(duration_seconds * rate) if duration_seconds is not None else None
    fifo = av.AudioFifo()
    written = 0  # samples handed to the encoder
    samples_seen = 0
    params = StreamParameters(codec="aac", time_base=Fraction(1, rate), extradata=b"", sample_rate=rate,
                              channels=channels)
    writer = PacketStoreWriter(store, params)
    loudness = _LoudnessNormalizer(layout, rate) if normalize else None

    def emit(frame: av.AudioFrame | None) -> None:
        for packet in encoder.encode(frame):
            writer.write(packet, packet.duration or frame_size)

    def feed(frame: av.AudioFrame) -> None:
        nonlocal written
        fifo.write(frame)
        while fifo.samples >= frame_size:
            block = fifo.read(frame_size)
            if block is None:
                return
            if total_samples is not None and written + block.samples > total_samples:
                block = _slice(block, 0, max(0, total_samples - written), layout, rate)
                if block is None:
                    return
            block.pts = written
            block.time_base = Fraction(1, rate)
            written += block.samples
            emit(block)

    def keep(frame: av.AudioFrame) -> None:
        """A kept frame of the source (after trimming), through the normalizer when there is one."""
        for out in loudness.process(frame) if loudness is not None else (frame,):
            feed(out)

    try:
        container = open_input(path)
        try:
            stream = stream_at(container, audio.index)
            first = True
            for decoded in _decoded_audio(container, stream):
                offset = 0
                if first and origin_seconds is not None and decoded.pts is not None and decoded.time_base:
                    offset = round((decoded.pts * Fraction(decoded.time_base) - origin_seconds) * rate)
                # Timing is ours (sample counting from the first frame); container timestamps that jitter
                # (Matroska's milliseconds, MPEG-TS) must not reach the resampler, which insists on continuity.
                decoded.pts = None
                for frame in resampler.resample(decoded):
                    if first and offset > 0:
                        feed(_silence(offset, layout, rate))
                    elif first and offset < 0:
                        trimmed = _slice(frame, -offset, None, layout, rate)
                        offset += frame.samples
                        if trimmed is None:
                            continue
                        frame = trimmed
                    first = False
                    samples_seen += frame.samples
                    keep(frame)
            for frame in resampler.resample(None):
                keep(frame)
            if loudness is not None:
                for frame in loudness.flush():
                    feed(frame)
        finally:
            container.close()
        if samples_seen == 0:
            raise InvalidMediaError("the audio stream has no decodable samples")
        if total_samples is not None and written + fifo.samples < total_samples:
            feed(_silence(total_samples - written - fifo.samples, layout, rate))
        if fifo.samples:
            tail = fifo.read()
            if tail is not None and total_samples is not None:
                tail = _slice(tail, 0, max(0, total_samples - written), layout, rate)
            if tail is not None:
                tail.pts = written
                tail.time_base = Fraction(1, rate)
                written += tail.samples
                emit(tail)
        emit(None)
        writer.params = replace(params, extradata=bytes(encoder.extradata or b""))
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    return AudioResult(store=str(store), codec="aac", channels=channels, sample_rate=rate, bitrate=bitrate,
                       samples=written, packets=len(writer.rows), bytes=writer.bytes_written)


class _LoudnessNormalizer:
    """``loudnorm`` in a PyAV filter graph: ``fltp`` frames at ``rate`` in, the same format out (the filter
    works at 192 kHz; ``aresample`` brings it back). Frames come out later than they go in (look-ahead)."""

    def __init__(self, layout: str, rate: int) -> None:
        self.rate = rate
        self.samples = 0
        self.graph = av.filter.Graph()
        chain = [self.graph.add_abuffer(format="fltp", sample_rate=rate, layout=layout, time_base=Fraction(1, rate)),
                 self.graph.add("loudnorm", _LOUDNORM),
                 self.graph.add("aresample", str(rate)),
                 self.graph.add("aformat", f"sample_fmts=fltp:sample_rates={rate}:channel_layouts={layout}"),
                 self.graph.add("abuffersink")]
        for upstream, downstream in zip(chain, chain[1:], strict=False):
            upstream.link_to(downstream)
        self.graph.configure()

    def process(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        frame.pts = self.samples
        frame.time_base = Fraction(1, self.rate)
        self.samples += frame.samples
        self.graph.push(frame)
        return self._drain()

    def flush(self) -> list[av.AudioFrame]:
        self.graph.push(None)
        return self._drain()

    def _drain(self) -> list[av.AudioFrame]:
        out: list[av.AudioFrame] = []
        while True:
            try:
                frame = self.graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return out
            assert isinstance(frame, av.AudioFrame)
            frame.pts = None  # the FIFO counts samples itself
            out.append(frame)


def _decoded_audio(container: av.container.InputContainer, stream: av.AudioStream):
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.FFmpegError as e:
            raise corrupt_packet_error("audio", packet, e) from e


def _silence(samples: int, layout: str, rate: int) -> av.AudioFrame:
    channels = 1 if layout == "mono" else 2
    frame = av.AudioFrame.from_ndarray(np.zeros((channels, samples), dtype=np.float32), format="fltp",
                                       layout=layout)
    frame.sample_rate = rate
    return frame


def _slice(frame: av.AudioFrame, start: int, stop: int | None, layout: str, rate: int) -> av.AudioFrame | None:
    """Samples ``[start, stop)`` of ``frame`` as a new frame, or None when that range is empty."""
    data = frame.to_ndarray()[:, start:stop].astype(np.float32, copy=False)
    if data.shape[1] == 0:
        return None
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=layout)
    out.sample_rate = rate
    return out
