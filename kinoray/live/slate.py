"""Slates: what a live stream shows while its publisher is away within the reconnect window, and the one FLV
timeline that joins a session's publisher connections and the slates between them.

**Why a second publisher and not a second packager.** The live transcoder already decodes one FLV stream and
encodes every rung of the ladder with IDRs on the shared segment grid (:mod:`kinoray.live.transcode`). The slate
is made as an FLV stream of its own — one GOP of the slate image encoded once (an IDR and P frames that repeat it,
so looping it costs nothing), and AAC silence with the publisher's AudioSpecificConfig — and
:class:`SessionTimeline` feeds it into the *same* transcoder where the publisher's tags stopped, stamped on the
wall clock. The ladder's encoders, muxers and playlists go on as if the publisher had sent a picture of the slate:
same segment grid, same encoder configuration, continuous timestamps, ``EXT-X-PROGRAM-DATE-TIME`` that follows the
wall clock, and no ``EXT-X-DISCONTINUITY`` because nothing a player must reset changes (RFC 8216 asks for one only
when the timestamps, codec or encoding parameters change; here the decoder the player has keeps decoding). When
the publisher reconnects — or, still connected, sends again after a silence (Mux's "brief interruptions") — its
headers are held until its next keyframe, then the slate stops and its media goes on from there, after its codec
configuration and restamped to follow the slate.

The image (``reconnect_slate_url``) is fetched once per recording by the runtime through the SSRF policy
(:func:`kinoray.control.ingest.read_url`) and must decode as a still image (PNG, JPEG, WebP, BMP, GIF, TIFF) of at
most :data:`MAX_SLATE_PIXELS`; anything else gives the default slate (:func:`default_slate_image`), a dark frame
with a pause sign. Pure PyAV + numpy: no Ray, no HTTP.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from kinoray.errors import InvalidMediaError
from kinoray.media.flv import AUDIO, SCRIPT, VIDEO, FlvTag, read_header, read_tags

__all__ = [
    "MAX_SLATE_BYTES",
    "MAX_SLATE_PIXELS",
    "SessionTimeline",
    "SlateMedia",
    "build_slate",
    "decode_slate_image",
    "default_slate_image",
]

log = logging.getLogger(__name__)

#: The largest slate image fetched (bytes) and decoded (width × height): a decompression bomb is refused from its
#: header, before any pixel is decoded.
MAX_SLATE_BYTES = 16 << 20
MAX_SLATE_PIXELS = 8192 * 8192
_IMAGE_CODECS = frozenset({"png", "mjpeg", "webp", "bmp", "gif", "tiff", "jpegls", "apng"})
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
#: The default slate: a dark blue-grey field with a lighter pause sign.
DEFAULT_BACKGROUND = (28, 32, 44)
_DEFAULT_SIGN = (200, 204, 214)


def default_slate_image(width: int, height: int) -> np.ndarray:
    """The default slate (RGB, ``height × width × 3``): :data:`DEFAULT_BACKGROUND` with a pause sign."""
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = DEFAULT_BACKGROUND
    bar_w, bar_h = max(2, width // 24), max(4, height // 4)
    top, centre = (height - bar_h) // 2, width // 2
    for left in (centre - 2 * bar_w, centre + bar_w):
        canvas[top:top + bar_h, max(0, left):left + bar_w] = _DEFAULT_SIGN
    return canvas


def decode_slate_image(data: bytes, width: int, height: int) -> np.ndarray:
    """``data`` decoded as a still image and fitted into ``width × height`` (aspect kept, black bars), RGB.

    Raises:
        InvalidMediaError: not an image PyAV decodes, or larger than :data:`MAX_SLATE_BYTES` /
            :data:`MAX_SLATE_PIXELS`.
    """
    if not data or len(data) > MAX_SLATE_BYTES:
        raise InvalidMediaError(f"a slate image is 1 to {MAX_SLATE_BYTES} bytes, not {len(data)}")
    try:
        with av.open(io.BytesIO(data), "r", options={"probesize": "5000000"}) as container:
            if not container.streams.video:
                raise InvalidMediaError("the slate is not an image")
            stream = container.streams.video[0]
            context = stream.codec_context
            if context.name not in _IMAGE_CODECS:
                raise InvalidMediaError(f"the slate is {context.name}, not a still image")
            if not 0 < context.width * context.height <= MAX_SLATE_PIXELS:
                raise InvalidMediaError(f"a slate image of {context.width}x{context.height} is too large")
            frame = next(container.decode(stream), None)
    except av.FFmpegError as error:
        raise InvalidMediaError(f"the slate image does not decode: {error}") from None
    if frame is None:
        raise InvalidMediaError("the slate image has no picture")
    scale = min(Fraction(width, frame.width), Fraction(height, frame.height))
    fit_w, fit_h = max(2, int(frame.width * scale) // 2 * 2), max(2, int(frame.height * scale) // 2 * 2)
    picture = frame.reformat(width=fit_w, height=fit_h, format="rgb24").to_ndarray()
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - fit_h) // 2, (width - fit_w) // 2
    canvas[top:top + fit_h, left:left + fit_w] = picture[:fit_h, :fit_w]
    return canvas


@dataclass(frozen=True)
class SlateMedia:
    """The slate as FLV tags, made once per session: ``headers`` (the AVC sequence header, the AAC one when the
    stream has audio), ``video`` one GOP (an IDR, then P frames) to loop at ``frame_rate``, ``audio`` AAC frames of
    silence to loop, each ``audio_frame`` seconds long. Timestamps of the tags are not used: the timeline stamps
    them."""

    headers: tuple[FlvTag, ...]
    video: tuple[FlvTag, ...]
    audio: tuple[FlvTag, ...]
    frame_rate: Fraction
    audio_frame: Fraction | None
    width: int
    height: int

    def __post_init__(self) -> None:
        if not self.video or not self.video[0].is_keyframe:
            raise ValueError("a slate's video starts with a keyframe")
        if self.frame_rate <= 0:
            raise ValueError("a slate needs a frame rate")


def _audio_config(header: FlvTag | None) -> tuple[int, int] | None:
    """(sample rate, channels) of an AAC sequence header tag's AudioSpecificConfig, or ``None``."""
    if header is None or len(header.body) < 4:
        return None
    first, second = header.body[2], header.body[3]
    rate_index, channels = ((first & 0x07) << 1) | (second >> 7), (second >> 3) & 0x0F
    if rate_index >= len(_AAC_RATES) or channels not in (1, 2):
        return None
    return _AAC_RATES[rate_index], channels


def build_slate(image: bytes | None, *, width: int, height: int, frame_rate: Fraction,
                audio_header: FlvTag | None = None) -> SlateMedia:
    """The slate for a stream of ``width × height`` at ``frame_rate``: ``image`` (or the default slate when it is
    ``None`` or does not decode: logged), one second of H.264 (libx264, ultrafast, no B frames) and, when
    ``audio_header`` is the publisher's AAC sequence header, AAC-LC silence at its sample rate and channels.
    Costs one short encode (tens of milliseconds at 720p)."""
    width, height = max(2, width // 2 * 2), max(2, height // 2 * 2)
    picture = None
    if image is not None:
        try:
            picture = decode_slate_image(image, width, height)
        except InvalidMediaError as error:
            log.warning("slate image refused: the default slate is used", extra={"error": str(error)})
    if picture is None:
        picture = default_slate_image(width, height)
    rate = Fraction(frame_rate).limit_denominator(1001)
    gop = max(1, round(rate))
    audio = _audio_config(audio_header)
    out = io.BytesIO()
    with av.open(out, "w", format="flv") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "tune": "stillimage", "bf": "0", "g": str(gop),
                         "keyint_min": str(gop), "sc_threshold": "0"}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=audio[0])
            audio_stream.layout = "mono" if audio[1] == 1 else "stereo"
        source = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        for index in range(gop):
            source.pts = index
            for packet in video.encode(source):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio_stream is not None and audio is not None:
            (rate_hz, channels), samples = audio, 1024
            silence = np.zeros((1, samples * channels), dtype=np.int16)
            for index in range(max(4, rate_hz // samples + 2)):
                frame = av.AudioFrame.from_ndarray(silence, format="s16", layout=audio_stream.layout.name)
                frame.sample_rate, frame.pts = rate_hz, index * samples
                for packet in audio_stream.encode(frame):
                    container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)
    data = io.BytesIO(out.getvalue())
    read_header(data)
    tags = [tag for tag in read_tags(data) if tag.kind != SCRIPT]
    # the publisher's own AAC configuration (the same object type, rate and channels): nothing for the transcoder's
    # audio muxer to change when the slate starts or ends
    headers = tuple(tag for tag in tags if tag.is_header and tag.kind == VIDEO) + \
        ((audio_header,) if audio_header is not None and audio is not None else ())
    # AVC NAL unit tags only (not the end-of-sequence tag the muxer closes with)
    frames = tuple(tag for tag in tags if tag.kind == VIDEO and len(tag.body) > 5 and tag.body[1] == 1)
    # the encoder's first frames carry its priming; the rest are identical silence
    sound = tuple(tag for tag in tags if tag.kind == AUDIO and not tag.is_header)[2:-1]
    return SlateMedia(headers=headers, video=frames, audio=sound if audio is not None else (),
                      frame_rate=rate, audio_frame=Fraction(1024, audio[0]) if audio is not None else None,
                      width=width, height=height)


@dataclass
class _Slate:
    media: SlateMedia
    start_ms: int
    video_sent: int = 0
    audio_sent: int = 0
    headers_sent: bool = False


@dataclass
class SessionTimeline:
    """The FLV tags of one live session as one stream: the first connection's tags as they come, the slate while
    no publisher is connected, a reconnected publisher's tags restamped to follow on (see the module docstring).

    ``now`` arguments are wall-clock seconds (``time.time()``); the timeline's clock is the publisher's (the
    earliest arrival less timestamp, as :class:`~kinoray.live.pipe.TagPipe` estimates it), so slate frames are
    stamped with the wall time they stand for. Every call returns the tags to send, in order."""

    clock: float | None = None
    slate_media: SlateMedia | None = None
    _offset: int | None = 0  # ms added to the connection's stamps; None: not known before its first keyframe
    _last: dict[int, int] = field(default_factory=lambda: {VIDEO: -1, AUDIO: -1})
    _headers: dict[int, bytes] = field(default_factory=dict)  # the codec configuration in the stream now
    _held: dict[int, FlvTag] = field(default_factory=dict)  # a reconnected publisher's, until its keyframe
    _publisher_headers: dict[int, FlvTag] = field(default_factory=dict)  # the last the publisher sent
    _slate: _Slate | None = None
    _restamp: bool = False

    @property
    def slating(self) -> bool:
        """Whether the slate is being sent."""
        return self._slate is not None

    def _now_ms(self, now: float) -> int:
        return round((now - self.clock) * 1000) if self.clock is not None else max(self._last.values()) + 1

    def _out(self, tag: FlvTag, timestamp: int) -> FlvTag | None:
        """``tag`` at ``timestamp``, or ``None`` when it would not follow what was sent (a muxer refuses time that
        goes back) or repeats the codec configuration already in the stream."""
        if tag.is_header:
            if tag.kind == SCRIPT:  # metadata: the first connection's, as it comes
                return None if self._restamp else tag
            if self._restamp and self._headers.get(tag.kind) == tag.body:
                return None
            self._headers[tag.kind] = tag.body
            return FlvTag(tag.kind, max(0, timestamp), tag.body)
        if tag.kind in self._last:
            if self._restamp and timestamp <= self._last[tag.kind]:
                return None
            self._last[tag.kind] = max(self._last[tag.kind], timestamp)
        return FlvTag(tag.kind, timestamp, tag.body)

    def publisher(self, tag: FlvTag, now: float) -> list[FlvTag]:
        """What to send for a tag of the connected publisher."""
        if self._offset is None:  # a reconnected publisher: nothing until its first keyframe
            if tag.is_header:
                self._held[tag.kind] = tag
                return []
            if not (tag.kind == VIDEO and tag.is_keyframe):
                return []
            # a frame's time after the last picture (the slate's), so no two pictures share an instant
            frame_ms = round(1000 / self.slate_media.frame_rate) if self.slate_media is not None else 1
            start = max(self._now_ms(now), self._last[VIDEO] + frame_ms, self._last[AUDIO] + 1)
            self._offset = start - tag.timestamp
            self._slate = None
            self._publisher_headers.update(self._held)
            held = [self._out(header, start) for kind, header in sorted(self._held.items()) if kind != SCRIPT]
            self._held.clear()
            return [out for out in (*held, self._out(tag, start)) if out is not None]
        if tag.is_header:
            self._publisher_headers[tag.kind] = tag
        timestamp = tag.timestamp + self._offset
        out = self._out(tag, timestamp)
        if out is not None and not tag.is_header:
            clock = now - timestamp / 1000
            self.clock = clock if self.clock is None else min(self.clock, clock)
        return [out] if out is not None else []

    def publisher_left(self, now: float) -> bool:
        """The publisher is gone (or went silent): start the slate (``False`` when there is none to send; ``True``
        when it runs already). The publisher's next tags wait for :meth:`reconnected`."""
        if self._slate is not None:
            return True
        if self.slate_media is None:
            return False
        video_ms = 1000 / self.slate_media.frame_rate
        start = max(self._now_ms(now), round(self._last[VIDEO] + video_ms), self._last[AUDIO] + 1)
        self._slate = _Slate(self.slate_media, start)
        self._restamp = True
        return True

    def reconnected(self) -> None:
        """A publisher of the same session connected, or a silent one sends again: its tags are restamped to
        follow on, from its next keyframe (the slate goes on until then), after its codec configuration — the one
        it sends now, else the last it sent (a publisher that only went silent sends none again)."""
        self._offset, self._restamp = None, True
        self._held = {kind: tag for kind, tag in self._publisher_headers.items() if kind != SCRIPT}

    def slate_tags(self, now: float) -> list[FlvTag]:
        """The slate's tags due by ``now`` (none when not slating), video and audio in time order."""
        slate = self._slate
        if slate is None:
            return []
        media, until = slate.media, self._now_ms(now)
        due: list[tuple[int, FlvTag]] = []
        if not slate.headers_sent:
            slate.headers_sent = True
            due += [(slate.start_ms, header) for header in media.headers]
        while (stamp := slate.start_ms + round(slate.video_sent * 1000 / media.frame_rate)) <= until:
            due.append((stamp, media.video[slate.video_sent % len(media.video)]))
            slate.video_sent += 1
        while media.audio and media.audio_frame is not None and \
                (stamp := slate.start_ms + round(slate.audio_sent * media.audio_frame * 1000)) <= until:
            due.append((stamp, media.audio[slate.audio_sent % len(media.audio)]))
            slate.audio_sent += 1
        due.sort(key=lambda item: (item[0], not item[1].is_header))
        return [out for stamp, tag in due if (out := self._out(tag, stamp)) is not None]
