"""FLV tags back to frames: what a WHEP viewer of an RTMP-published stream is sent (:mod:`kinoray.live.whip`),
since WebRTC peers (aiortc) take decoded frames. The reverse of :class:`~kinoray.live.bridge.FlvBridge`.

:class:`FlvDecoder` decodes the H.264 video (AVC sequence header → the decoder's ``avcC`` extradata; pictures from
the first keyframe after it) and the AAC audio (AudioSpecificConfig → extradata), stamps frames on the FLV
clock (milliseconds; audio in samples) and gives audio as packed 16-bit 48 kHz stereo, what aiortc's Opus
encoder takes. Other codecs (HEVC in enhanced FLV, MP3) give no frames. A tag FFmpeg cannot decode is skipped
(the next keyframe resynchronises): a viewer sees a stall, the stream goes on.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import av

from kinoray.media.flv import AUDIO, VIDEO, FlvTag

__all__ = ["FlvDecoder"]

log = logging.getLogger(__name__)

_MS = Fraction(1, 1000)
_AVC, _AAC = 7, 10
_OPUS_RATE = 48_000


class FlvDecoder:
    """H.264/AAC FLV tags in, ``av`` frames out (see the module docstring). Blocking: call off the event loop."""

    def __init__(self) -> None:
        self.video: av.VideoCodecContext | None = None
        self.audio: av.AudioCodecContext | None = None
        self.resampler = av.AudioResampler(format="s16", layout="stereo", rate=_OPUS_RATE)
        self.waiting_for_keyframe = True
        self.errors = 0

    def decode_all(self, tags: list[FlvTag]) -> list[av.VideoFrame | av.AudioFrame]:
        """The frames of ``tags``, in order."""
        return [frame for tag in tags for frame in self.decode(tag)]

    def decode(self, tag: FlvTag) -> list[av.VideoFrame | av.AudioFrame]:
        body = tag.body
        try:
            if tag.kind == VIDEO and len(body) > 5 and body[0] & 0x0F == _AVC:
                return list(self._video(tag))
            if tag.kind == AUDIO and len(body) > 2 and body[0] >> 4 == _AAC:
                return list(self._audio(tag))
        except av.FFmpegError as error:
            self.errors += 1
            self.waiting_for_keyframe = tag.kind == VIDEO or self.waiting_for_keyframe
            log.debug("flv tag not decoded", extra={"kind": tag.kind, "error": str(error)[:200]})
        return []

    def _video(self, tag: FlvTag) -> list[av.VideoFrame]:
        body = tag.body
        if body[1] == 0:  # AVC sequence header: a (new) decoder
            self.video = av.CodecContext.create("h264", "r")
            self.video.extradata = body[5:]
            self.waiting_for_keyframe = True
            return []
        if body[1] != 1 or self.video is None:
            return []  # end of sequence, or pictures before any configuration
        if self.waiting_for_keyframe:
            if not tag.is_keyframe:
                return []
            self.waiting_for_keyframe = False
        cts = int.from_bytes(body[2:5], "big", signed=True)
        packet = av.Packet(body[5:])
        packet.dts, packet.pts, packet.time_base = tag.timestamp, tag.timestamp + cts, _MS
        frames = self.video.decode(packet)
        for frame in frames:
            frame.time_base = _MS
        return frames

    def _audio(self, tag: FlvTag) -> list[av.AudioFrame]:
        body = tag.body
        if body[1] == 0:  # AudioSpecificConfig
            self.audio = av.CodecContext.create("aac", "r")
            self.audio.extradata = body[2:]
            self.resampler = av.AudioResampler(format="s16", layout="stereo", rate=_OPUS_RATE)
            return []
        if self.audio is None or self.waiting_for_keyframe:
            return []  # nothing to play it with, or no picture yet (a viewer starts at a keyframe)
        packet = av.Packet(body[2:])
        packet.pts = packet.dts = tag.timestamp
        packet.time_base = _MS
        out = []
        for frame in self.audio.decode(packet):
            frame.pts = None  # the resampler's output is stamped below, on the tag's clock
            for chunk in self.resampler.resample(frame):
                chunk.pts, chunk.time_base = round(tag.timestamp * _OPUS_RATE / 1000), Fraction(1, _OPUS_RATE)
                out.append(chunk)
        return out
