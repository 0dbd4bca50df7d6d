"""Decoded frames to FLV tags: how a publisher whose media is not FLV (WHIP: aiortc hands over decoded
``av`` frames) joins the live runtime, which takes FLV tags from every ingest (:mod:`kinoray.live.ingest`).

:class:`FlvBridge` encodes the video once at the source's size (H.264 through the encoder registry, libx264
``tune=zerolatency`` on CPU, an IDR every ``gop_seconds``, no B-frames) and the audio to AAC (FFmpeg's
encoder, 48 kHz stereo), and turns the packets into the tags an RTMP publisher would have sent: ``onMetaData``,
the AVC and AAC sequence headers, then media. Everything downstream — the recording, the live ladder, simulcast
— is then the RTMP path unchanged.

Why a bridge rather than frames straight into the ladder (:mod:`kinoray.live.transcode`): the recording and the
simulcast targets need an H.264/AAC bitstream anyway, and the transcoder runs in another actor (possibly on
another node), so raw frames would cross Ray at ~41 MB/s for 720p30 (1.4 MB a picture) instead of a few Mbit/s;
the cost is one more encode at the source's size on the ingest (measured in docs/ARCHITECTURE.md).

Clocks: WebRTC gives each track RTP timestamps from a random origin with no common clock (RTCP sender reports,
which would align them, are not exposed by aiortc), so each track's timeline starts where its first frame
arrived on the wall clock, and then follows its own timestamps. Frames larger or smaller than the first (a
browser adapting its resolution) are scaled to the first frame's size, so the stream's size never changes.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from fractions import Fraction

import av

from kinoray.encoders.base import EncoderSession, EncoderSettings
from kinoray.encoders.registry import select_encoder
from kinoray.live.amf import AmfValue
from kinoray.live.amf import encode as amf_encode
from kinoray.live.cmaf import annexb_to_lengths, nal_units
from kinoray.media.flv import AUDIO, SCRIPT, VIDEO, FlvTag

__all__ = ["FlvBridge", "avc_configuration"]

_MS = Fraction(1, 1000)
_AAC_RATE = 48_000
#: FLV's AAC audio tag byte: sound format 10 (AAC), "44 kHz", 16-bit, stereo — fixed for AAC by the spec
_AAC_FLAGS = 0xAF
_AVC_CODEC_ID = 7


def avc_configuration(extradata: bytes) -> bytes:
    """An AVCDecoderConfigurationRecord (what an FLV AVC sequence header and MP4's ``avcC`` hold) from an
    encoder's extradata: returned as is when it is one already, else built from the Annex B SPS and PPS."""
    if extradata[:1] == b"\x01":
        return extradata
    units = list(nal_units(extradata))
    sps = [unit for unit in units if unit and unit[0] & 0x1F == 7]
    pps = [unit for unit in units if unit and unit[0] & 0x1F == 8]
    if not sps or not pps:
        raise ValueError("the encoder's extradata has no SPS and PPS")
    out = bytearray([1, sps[0][1], sps[0][2], sps[0][3], 0xFF, 0xE0 | len(sps)])
    for unit in sps:
        out += struct.pack(">H", len(unit)) + unit
    out.append(len(pps))
    for unit in pps:
        out += struct.pack(">H", len(unit)) + unit
    return bytes(out)


class FlvBridge:
    """Frames in, FLV tags out (see the module docstring). :meth:`video` and :meth:`audio` encode and return the
    tags they made (blocking: call them off the event loop; calls from several threads take turns, and
    :meth:`close` waits for the one running); ``has_audio``: whether audio will come (from the offer), so the
    metadata says so. ``clock``: seconds, for tests."""

    def __init__(self, *, has_audio: bool, encoder: str = "libx264", preset: str = "ultrafast",
                 gop_seconds: float = 2.0, bits_per_pixel: float = 0.12,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.has_audio, self.encoder, self.preset = has_audio, encoder, preset
        self.gop_ms, self.bits_per_pixel, self.clock = int(gop_seconds * 1000), bits_per_pixel, clock
        self.start: float | None = None
        self.size: tuple[int, int] | None = None
        self.session: EncoderSession | None = None
        self.encoder_name = ""
        self._video_origin: tuple[float, Fraction] | None = None  # (arrival ms, first pts in seconds)
        self._last_video_ms = -1
        self._next_idr_ms = 0
        self._audio: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._audio_origin_ms: int | None = None
        self._audio_samples = 0
        self._audio_priming: int | None = None  # the encoder's first packet starts this far before 0 (samples)
        self.frames = 0
        self._lock = threading.Lock()
        self._closed = False

    def _arrival_ms(self) -> float:
        now = self.clock()
        if self.start is None:
            self.start = now
        return (now - self.start) * 1000

    # --- video -----------------------------------------------------------------------------------------------

    def video(self, frame: av.VideoFrame) -> list[FlvTag]:
        with self._lock:
            return [] if self._closed else self._video(frame)

    def _video(self, frame: av.VideoFrame) -> list[FlvTag]:
        tags: list[FlvTag] = []
        seconds = Fraction(frame.pts or 0) * (frame.time_base or Fraction(1, 90_000))
        if self._video_origin is None:
            self._video_origin = (self._arrival_ms(), seconds)
            tags += self._open_video(frame)
        arrival, first = self._video_origin
        ms = round(arrival + (seconds - first) * 1000)
        if ms <= self._last_video_ms:
            return tags  # a clock that went back (or a repeated frame): dropped, as the ladder would
        self._last_video_ms = ms
        assert self.session is not None and self.size is not None
        width, height = self.size
        picture = frame.reformat(width=width, height=height, format="yuv420p")
        if picture is frame:  # the frame is shared (WHEP viewers encode it too): never stamp it
            picture = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
        picture.pts, picture.time_base = ms, _MS
        force = ms >= self._next_idr_ms
        if force:
            self._next_idr_ms = ms + self.gop_ms
        self.frames += 1
        return tags + self._video_tags(self.session.encode(picture, force))

    def _open_video(self, frame: av.VideoFrame) -> list[FlvTag]:
        width, height = frame.width - frame.width % 2, frame.height - frame.height % 2
        self.size = (width, height)
        choice = select_encoder("h264", self.encoder)
        bitrate = max(300_000, int(width * height * 30 * self.bits_per_pixel))
        self.encoder_name = choice.name
        self.session = choice.backend.open(EncoderSettings(
            codec="h264", width=width, height=height, frame_rate=Fraction(30), time_base=_MS,
            gop_frames=1_000_000, max_bitrate=bitrate, buffer_size=bitrate, preset=self.preset, bframes=0,
            threads=1, extra=(("tune", "zerolatency"),) if choice.name == "libx264" else ()))
        metadata: dict[str, AmfValue] = {
            "width": float(width), "height": float(height), "videocodecid": float(_AVC_CODEC_ID),
            "videodatarate": bitrate / 1000, "encoder": f"kinoray whip bridge ({choice.name})"}
        if self.has_audio:
            metadata.update(audiocodecid=10.0, audiosamplerate=float(_AAC_RATE), stereo=True)
        tags = [FlvTag(SCRIPT, 0, amf_encode("onMetaData", metadata))]
        if self.session.extradata:
            tags.append(self._avc_header(0))
        return tags

    def _avc_header(self, ms: int) -> FlvTag:
        assert self.session is not None
        return FlvTag(VIDEO, ms, bytes([0x10 | _AVC_CODEC_ID, 0, 0, 0, 0])
                      + avc_configuration(self.session.extradata))

    def _video_tags(self, packets: list[av.Packet]) -> list[FlvTag]:
        tags = []
        for packet in packets:
            ms = packet.dts if packet.dts is not None else packet.pts
            if ms is None:
                continue
            cts = (packet.pts if packet.pts is not None else ms) - ms
            frame_type = 0x10 if packet.is_keyframe else 0x20
            body = bytes([frame_type | _AVC_CODEC_ID, 1]) + (cts & 0xFFFFFF).to_bytes(3, "big") \
                + annexb_to_lengths(bytes(packet))
            tags.append(FlvTag(VIDEO, int(ms), body))
        return tags

    # --- audio -----------------------------------------------------------------------------------------------

    def audio(self, frame: av.AudioFrame) -> list[FlvTag]:
        with self._lock:
            return [] if self._closed else self._audio_frame(frame)

    def _audio_frame(self, frame: av.AudioFrame) -> list[FlvTag]:
        if self._video_origin is None:
            return []  # before the first picture there is no stream to join (the ladder would drop it too)
        tags: list[FlvTag] = []
        if self._audio is None:
            self._audio_origin_ms = round(self._arrival_ms())
            tags.append(self._open_audio())
        assert self._resampler is not None  # its output is stamped by the samples counted (the frame is shared)
        for chunk in self._resampler.resample(frame):
            tags += self._audio_tags(self._encode_audio(chunk))
        return tags

    def _open_audio(self) -> FlvTag:
        context = av.CodecContext.create("aac", "w")
        context.sample_rate, context.layout, context.format = _AAC_RATE, "stereo", "fltp"
        context.bit_rate, context.time_base = 128_000, Fraction(1, _AAC_RATE)
        context.flags |= av.codec.context.Flags.global_header
        context.open()
        self._audio = context
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=_AAC_RATE,
                                            frame_size=context.frame_size or 1024)
        return FlvTag(AUDIO, self._audio_origin_ms or 0, bytes([_AAC_FLAGS, 0]) + bytes(context.extradata or b""))

    def _encode_audio(self, chunk: av.AudioFrame | None) -> list[av.Packet]:
        assert self._audio is not None
        if chunk is not None:
            chunk.pts, chunk.time_base = self._audio_samples, Fraction(1, _AAC_RATE)
            self._audio_samples += chunk.samples
        return list(self._audio.encode(chunk))

    def _audio_tags(self, packets: list[av.Packet]) -> list[FlvTag]:
        """AAC packets as tags; the encoder's priming (its first packet at -1024 samples) is moved after the
        origin rather than before it, so no tag's timestamp is negative."""
        origin, tags = self._audio_origin_ms or 0, []
        for packet in packets:
            pts = packet.pts or 0
            if self._audio_priming is None:
                self._audio_priming = max(0, -pts)
            tags.append(FlvTag(AUDIO, origin + round((pts + self._audio_priming) * 1000 / _AAC_RATE),
                               bytes([_AAC_FLAGS, 1]) + bytes(packet)))
        return tags

    # --- the end ---------------------------------------------------------------------------------------------

    def close(self) -> list[FlvTag]:
        """What the encoders still hold, as tags; the encoders are closed (later frames are ignored)."""
        with self._lock:
            self._closed = True
            return self._close()

    def _close(self) -> list[FlvTag]:
        tags: list[FlvTag] = []
        if self.session is not None:
            try:
                tags += self._video_tags(self.session.flush())
            finally:
                self.session.close()
                self.session = None
        if self._audio is not None:
            tags += self._audio_tags(self._encode_audio(None))
            self._audio = None
        return tags
