"""Still and animated images of a video: exact thumbnails, animated GIF/WebP and storyboard sprites + WebVTT.

Pure functions over PyAV. Frames come from a :class:`FrameSource`: a :class:`FrameReader` over a progressive file
(a path, URL or file object; the asset's ``highest.mp4``) or a :class:`SegmentedReader` over one rendition's
CMAF segments (found through the DASH MPD; a small rung makes animations and storyboards cheap). Sources are
expected to be display-ready renditions (square pixels, no rotation to apply). Times are
:class:`~fractions.Fraction` seconds on the stream's own timeline.

*Exact frame* means: the frame shown at time ``t`` is the one whose presentation interval ``[pts, next pts)``
contains ``t``. It is found by seeking to the nearest keyframe at or before ``t`` and decoding forward; nearby
later requests (an animation, a storyboard) keep decoding forward instead of seeking again.

Encoders are FFmpeg's, through PyAV: ``mjpeg`` (JPEG), ``png``, ``libwebp`` (still WebP), ``gif`` with a palette
made by ``palettegen``/``paletteuse`` (two passes over the frames, so no frame is held in memory between them),
and ``libwebp_anim`` (animated WebP). Nothing here needs Pillow.
"""

from __future__ import annotations

import bisect
import io
import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Any, Literal, Protocol

import av
import av.filter
import av.video.reformatter
import numpy as np

from kinoray.errors import InvalidMediaError
from kinoray.media.probe import open_input

__all__ = [
    "ANIMATED_FORMATS",
    "FIT_MODES",
    "MEDIA_TYPES",
    "STILL_FORMATS",
    "AnimatedFormat",
    "AnimatedImage",
    "CmafSegment",
    "FitMode",
    "FrameReader",
    "FrameSource",
    "LiveSegment",
    "Resize",
    "SegmentedReader",
    "SegmentedRendition",
    "Size",
    "StillFormat",
    "StillImage",
    "StoryboardCue",
    "StoryboardLayout",
    "TimedFrame",
    "dash_video_renditions",
    "encode_still",
    "hls_latest_segment",
    "hls_top_variant",
    "plan_storyboard",
    "render_animated",
    "render_storyboard",
    "render_thumbnail",
    "storyboard_vtt",
]

log = logging.getLogger(__name__)

FitMode = Literal["preserve", "stretch", "crop", "pad"]
StillFormat = Literal["jpg", "png", "webp"]
AnimatedFormat = Literal["gif", "webp"]

FIT_MODES: tuple[FitMode, ...] = ("preserve", "stretch", "crop", "pad")
STILL_FORMATS: tuple[StillFormat, ...] = ("jpg", "png", "webp")
ANIMATED_FORMATS: tuple[AnimatedFormat, ...] = ("gif", "webp")
MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif",
               "vtt": "text/vtt; charset=utf-8"}

#: AREA for downscaling (what thumbnails and tiles mostly are): no aliasing, and swscale treats it as bilinear
#: when enlarging. BITEXACT so the same request gives the same bytes on every machine. Not ACCURATE_RND: it
#: switches swscale's YUV→RGB to another chroma path, 29 dB away from what the FFmpeg CLI (and every other
#: default decoder pipeline) shows for the same frame.
_INTERPOLATION = av.video.reformatter.Interpolation.AREA | av.video.reformatter.Interpolation.BITEXACT
_RGB24 = av.VideoFormat("rgb24")
_JPEG_QSCALE = 3  # mjpeg quantiser scale (2 best .. 31 worst): about 35 dB PSNR on busy test patterns
_WEBP_QUALITY = "80"
_ANIMATED_WEBP_QUALITY = "75"


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"a size needs positive dimensions, got {self.width}x{self.height}")


@dataclass(frozen=True)
class _Placement:
    """How a source frame becomes an output image: scale to ``scaled``, then place it at ``(x, y)`` on an
    ``output``-sized canvas (negative offsets crop, positive ones pad)."""

    scaled: Size
    output: Size
    x: int = 0
    y: int = 0


def _fit(source: Size, box: Size, *, cover: bool) -> Size:
    """``source`` scaled by one factor to fit inside ``box`` (or to cover it, when ``cover``)."""
    by_width = Fraction(box.width, source.width)
    by_height = Fraction(box.height, source.height)
    if (by_width <= by_height) != cover:
        return Size(box.width, max(1, round(source.height * by_width)))
    return Size(max(1, round(source.width * by_height)), box.height)


@dataclass(frozen=True)
class Resize:
    """Mux's thumbnail sizing. ``width``/``height`` default to the source's; with only one of them the other
    follows the aspect ratio. With both, ``fit_mode`` decides:

    - ``preserve`` (default): fit inside ``width``×``height``, aspect kept (one side may come out smaller);
    - ``stretch``: exactly ``width``×``height``, aspect ignored;
    - ``crop``: fill ``width``×``height``, aspect kept, the overflow cut off equally on both sides;
    - ``pad``: fit inside and letterbox/pillarbox with black to exactly ``width``×``height``.

    Enlarging is allowed (the caller bounds the sizes). Odd dimensions are fine for images. ``max_size``
    bounds both sides of a size that is not fully given (the source's, or one side following the aspect): such
    an image is scaled down, aspect kept, until it fits.
    """

    width: int | None = None
    height: int | None = None
    fit_mode: FitMode = "preserve"
    max_size: int | None = None

    def __post_init__(self) -> None:
        if self.fit_mode not in FIT_MODES:
            raise ValueError(f"fit_mode must be one of {', '.join(FIT_MODES)}, got {self.fit_mode!r}")
        for name in ("width", "height", "max_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive, got {value}")

    def place(self, source: Size) -> _Placement:
        if self.width is None or self.height is None:
            if self.width is not None:
                size = Size(self.width, max(1, round(Fraction(source.height * self.width, source.width))))
            elif self.height is not None:
                size = Size(max(1, round(Fraction(source.width * self.height, source.height))), self.height)
            else:
                size = source
            if self.max_size is not None and max(size.width, size.height) > self.max_size:
                size = _fit(source, Size(self.max_size, self.max_size), cover=False)
            return _Placement(size, size)
        box = Size(self.width, self.height)
        if self.fit_mode == "stretch":
            return _Placement(box, box)
        if self.fit_mode == "preserve":
            size = _fit(source, box, cover=False)
            return _Placement(size, size)
        scaled = _fit(source, box, cover=self.fit_mode == "crop")
        return _Placement(scaled, box, (box.width - scaled.width) // 2, (box.height - scaled.height) // 2)

    def output_size(self, source: Size) -> Size:
        """The size of the image this produces from a ``source``-sized frame."""
        return self.place(source).output

    def apply(self, frame: av.VideoFrame) -> np.ndarray:
        """``frame`` resized as an ``rgb24`` array of shape (height, width, 3)."""
        placement = self.place(Size(frame.width, frame.height))
        rgb = frame.to_ndarray(format="rgb24", width=placement.scaled.width, height=placement.scaled.height,
                               interpolation=_INTERPOLATION)
        if placement.scaled == placement.output:
            return rgb
        canvas = np.zeros((placement.output.height, placement.output.width, 3), dtype=np.uint8)
        # Crop and pad both reduce to copying the overlap of the scaled image and the canvas.
        src_x, src_y = max(0, -placement.x), max(0, -placement.y)
        dst_x, dst_y = max(0, placement.x), max(0, placement.y)
        width = min(placement.scaled.width - src_x, placement.output.width - dst_x)
        height = min(placement.scaled.height - src_y, placement.output.height - dst_y)
        canvas[dst_y:dst_y + height, dst_x:dst_x + width] = rgb[src_y:src_y + height, src_x:src_x + width]
        return canvas


# --- exact frames --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimedFrame:
    """A decoded frame and the start of its presentation interval (seconds)."""

    frame: av.VideoFrame
    time: Fraction


class FrameSource(Protocol):
    """Where rendering gets its frames: exact frames by time, in a known size."""

    size: Size

    def frames_at(self, times: Sequence[Fraction]) -> Iterator[TimedFrame]: ...


class FrameReader:
    """Exact frames of ``source``'s first video stream by presentation time (a path or URL as
    :func:`~kinoray.media.probe.open_input` reads them, or a seekable file object, which the reader then owns).

    Requests in increasing time order that are at most ``forward_seconds`` apart are served by decoding
    forward; anything else seeks to the keyframe at or before the time asked for. ``threads`` > 1 adds
    *slice* threads only: FFmpeg's frame threads log from their own threads, and with PyAV's log callback
    (FFmpeg logs go through Python logging) tearing a frame-threaded decoder down while a worker waits for the
    GIL deadlocks (seen in CI). An API replica renders several images at once anyway. ``seeks`` and
    ``decoded`` count the work done. One reader is not thread-safe; open one per rendering.
    """

    def __init__(self, source: str | IO[bytes], *, forward_seconds: Fraction = Fraction(2),
                 threads: int = 2) -> None:
        self.forward_seconds = forward_seconds
        self._file = None if isinstance(source, str) else source  # closed with the reader
        if isinstance(source, str):
            self._container = open_input(source)
        else:
            try:
                self._container = av.open(source, mode="r")
            except av.FFmpegError as e:
                source.close()
                raise InvalidMediaError(f"not a readable media file: {e.strerror or e}") from e
        try:
            if not self._container.streams.video:
                raise InvalidMediaError("the source has no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.codec_context.thread_count = threads
            self._stream.codec_context.thread_type = "SLICE"
            self.time_base = Fraction(self._stream.time_base or Fraction(1, 90000))
            self.size = Size(self._stream.codec_context.width, self._stream.codec_context.height)
        except BaseException:
            self.close()
            raise
        self._frames: Iterator[av.VideoFrame] | None = None
        self._current: TimedFrame | None = None
        self._next: TimedFrame | None = None
        self.seeks = 0
        self.decoded = 0

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._frames = None
        self._container.close()
        if self._file is not None:
            self._file.close()

    def _decode(self) -> Iterator[av.VideoFrame]:
        try:
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    self.decoded += 1
                    yield frame
        except av.FFmpegError as e:
            raise InvalidMediaError(f"the video data is corrupt: {e.strerror or e}") from e

    def _pull(self) -> TimedFrame | None:
        assert self._frames is not None
        for frame in self._frames:
            if frame.pts is None:
                continue  # no place on the timeline: cannot be the frame at any time
            return TimedFrame(frame, frame.pts * self.time_base)
        return None

    def _seek(self, time: Fraction, *, to_start: bool = False) -> None:
        self.seeks += 1
        target = 0 if to_start else math.floor(time / self.time_base)
        self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._decode()
        self._current = None
        self._next = self._pull()

    def frame_at(self, time: Fraction) -> TimedFrame:
        """The frame shown at ``time``: the last frame starting at or before it. Before the first frame that is
        the first frame; past the end, the last one."""
        current = self._current
        nearby = current is not None and current.time <= time <= current.time + self.forward_seconds
        if self._frames is None or not nearby:
            self._seek(time)
            if self._next is not None and self._next.time > time:
                # Landed after ``time``: demuxers may seek imprecisely; the stream's start is always right.
                self._seek(time, to_start=True)
        if self._current is None:
            if self._next is None:
                raise InvalidMediaError("the video stream has no decodable frame")
            self._current, self._next = self._next, self._pull()
        while self._next is not None and self._next.time <= time:
            self._current, self._next = self._next, self._pull()
        return self._current

    def frames_at(self, times: Sequence[Fraction]) -> Iterator[TimedFrame]:
        """:meth:`frame_at` for each time, in order (cheapest when the times increase)."""
        for time in times:
            yield self.frame_at(time)


@dataclass(frozen=True)
class CmafSegment:
    start: int  # presentation time of its first frame, in the rendition's timescale
    duration: int
    name: str  # path relative to the media folder, as the MPD's SegmentTemplate names it


@dataclass(frozen=True)
class SegmentedRendition:
    """A video rendition stored as a CMAF init segment plus media segments that each begin with a keyframe,
    as :mod:`kinoray.media.manifest` describes it in the DASH MPD (exact integer segment times)."""

    name: str
    size: Size
    timescale: int
    init: str
    segments: tuple[CmafSegment, ...]

    def __post_init__(self) -> None:
        if not self.segments or self.timescale < 1:
            raise ValueError(f"rendition {self.name} has no segments or no timescale")


_DASH = "{urn:mpeg:dash:schema:mpd:2011}"
_NUMBER = re.compile(r"\$Number(?:%0(\d+)d)?\$")


def _segment_name(template: str, number: int) -> str:
    return _NUMBER.sub(lambda match: str(number).zfill(int(match.group(1) or 0)), template)


def dash_video_renditions(mpd: str) -> list[SegmentedRendition]:
    """The video representations of an MPD written by :func:`kinoray.media.manifest.dash_mpd` (SegmentTemplate
    with ``$Number$`` media names and a SegmentTimeline), largest first.

    Raises:
        InvalidMediaError: the document is not such an MPD.
    """
    try:
        root = ET.fromstring(mpd)
        renditions = []
        for adaptation in root.iter(f"{_DASH}AdaptationSet"):
            if adaptation.get("contentType") != "video":
                continue
            for representation in adaptation.iter(f"{_DASH}Representation"):
                template = representation.find(f"{_DASH}SegmentTemplate")
                assert template is not None, "no SegmentTemplate"
                number = int(template.get("startNumber", "1"))
                media = template.attrib["media"]
                segments, start = [], 0
                for entry in template.iter(f"{_DASH}S"):
                    start = int(entry.get("t", start))
                    duration = int(entry.attrib["d"])
                    for _ in range(int(entry.get("r", "0")) + 1):
                        name = _segment_name(media, number)
                        segments.append(CmafSegment(start, duration, name))
                        start, number = start + duration, number + 1
                renditions.append(SegmentedRendition(
                    representation.attrib["id"], Size(int(representation.attrib["width"]),
                                                      int(representation.attrib["height"])),
                    int(template.attrib["timescale"]), template.attrib["initialization"], tuple(segments)))
    except (ET.ParseError, KeyError, ValueError, AssertionError) as e:
        raise InvalidMediaError(f"not a DASH manifest of ours: {e}") from e
    return sorted(renditions, key=lambda rendition: -rendition.size.width * rendition.size.height)


@dataclass(frozen=True)
class LiveSegment:
    """The newest complete segment of a live HLS rendition and its init segment (URIs as the media playlist
    writes them, relative to it)."""

    init: str
    segment: str


_RESOLUTION = re.compile(r"RESOLUTION=(\d+)x(\d+)")
_BANDWIDTH = re.compile(r"(?<![-A-Z])BANDWIDTH=(\d+)")
_MAP_URI = re.compile(r'#EXT-X-MAP:.*?URI="([^"]+)"')


def hls_top_variant(master: str) -> str | None:
    """The URI of the video variant with the most pixels (then the highest bandwidth) in an HLS master
    playlist; ``None`` when it lists none."""
    best: tuple[int, int, str] | None = None
    lines = [line.strip() for line in master.splitlines()]
    for index, line in enumerate(lines):
        if not line.startswith("#EXT-X-STREAM-INF:"):
            continue
        uri = next((later for later in lines[index + 1:] if later and not later.startswith("#")), None)
        resolution, bandwidth = _RESOLUTION.search(line), _BANDWIDTH.search(line)
        if uri is None or resolution is None:
            continue
        rank = (int(resolution[1]) * int(resolution[2]), int(bandwidth[1]) if bandwidth else 0, uri)
        best = rank if best is None or rank[:2] > best[:2] else best
    return best[2] if best else None


def hls_latest_segment(playlist: str) -> LiveSegment | None:
    """The newest complete segment of an fMP4 HLS media playlist with the init segment (``EXT-X-MAP``) in force
    for it; ``None`` before the first segment. Partial segments (LL-HLS ``EXT-X-PART``) are tags, not
    segments, and are passed over."""
    init: str | None = None
    latest: LiveSegment | None = None
    for raw in playlist.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-MAP:"):
            found = _MAP_URI.match(line)
            init = found[1] if found else None
        elif line and not line.startswith("#") and init is not None:
            latest = LiveSegment(init, line)
    return latest


class SegmentedReader:
    """Exact frames of a :class:`SegmentedRendition`: the segment holding a time is found from the MPD's exact
    segment times, fetched with ``load`` (name → bytes) and decoded after its init segment. Costs one segment
    fetch and at most one segment of decoding per distant request; nearby requests share the open segment.
    Reading a small rendition this way is what makes storyboards and animations cheap: a 240p frame decodes
    about 20 times faster than a 1080p one."""

    def __init__(self, rendition: SegmentedRendition, load: Callable[[str], bytes], *, threads: int = 2) -> None:
        self.rendition, self.size = rendition, rendition.size
        self._load, self._threads = load, threads
        self._init = load(rendition.init)
        self._starts = [segment.start for segment in rendition.segments]
        self._index: int | None = None
        self._reader: FrameReader | None = None
        self.fetched = 0

    def __enter__(self) -> SegmentedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def frame_at(self, time: Fraction) -> TimedFrame:
        index = max(0, bisect.bisect_right(self._starts, time * self.rendition.timescale) - 1)
        if index != self._index or self._reader is None:
            self.close()
            data = self._load(self.rendition.segments[index].name)
            self.fetched += 1
            self._reader = FrameReader(io.BytesIO(self._init + data), threads=self._threads)
            self._index = index
        return self._reader.frame_at(time)

    def frames_at(self, times: Sequence[Fraction]) -> Iterator[TimedFrame]:
        for time in times:
            yield self.frame_at(time)


# --- encoding ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StillImage:
    data: bytes
    format: StillFormat
    size: Size
    frame_time: Fraction | None  # start of the chosen frame's presentation interval (None for a sprite)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]


@dataclass(frozen=True)
class AnimatedImage:
    data: bytes
    format: AnimatedFormat
    size: Size
    frames: int
    fps: int

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]


def _rgb_frame(rgb: np.ndarray) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")


def encode_still(rgb: np.ndarray, format: StillFormat) -> bytes:
    """One ``rgb24`` image (height, width, 3) as a JPEG (``mjpeg``, full-range BT.601 as JFIF wants), PNG
    (lossless) or WebP (``libwebp``, quality 80) file."""
    height, width = rgb.shape[:2]
    options: dict[str, str] = {}
    if format == "jpg":
        codec, pix_fmt = "mjpeg", "yuvj420p"
    elif format == "png":
        codec, pix_fmt = "png", "rgb24"
    elif format == "webp":
        codec, pix_fmt, options = "libwebp", "yuv420p", {"quality": _WEBP_QUALITY}
    else:
        raise ValueError(f"unknown still image format {format!r}")
    context: Any = av.CodecContext.create(codec, "w")
    context.width, context.height, context.pix_fmt = width, height, pix_fmt
    context.time_base = Fraction(1, 1)
    context.options = options
    if format == "jpg":
        context.qscale = _JPEG_QSCALE
    frame = _rgb_frame(rgb)
    if pix_fmt != "rgb24":
        frame = frame.reformat(format=pix_fmt, interpolation=_INTERPOLATION)
    frame.pts = 0
    packets = [*context.encode(frame), *context.encode(None)]
    return b"".join(bytes(packet) for packet in packets)


def render_thumbnail(frames: FrameSource, time: Fraction, resize: Resize, format: StillFormat) -> StillImage:
    """The exact frame at ``time``, resized and encoded. From a :class:`FrameReader`: one seek and the decode
    of at most one GOP."""
    picked = next(frames.frames_at([time]))
    rgb = resize.apply(picked.frame)
    return StillImage(encode_still(rgb, format), format, Size(rgb.shape[1], rgb.shape[0]), picked.time)


def _sample_times(start: Fraction, end: Fraction, fps: int) -> list[Fraction]:
    count = max(1, math.ceil((end - start) * fps))
    return [start + Fraction(index, fps) for index in range(count)]


def _drain(graph: av.filter.Graph) -> Iterator[av.VideoFrame]:
    while True:
        try:
            frame = graph.pull()
        except (av.BlockingIOError, av.EOFError):
            return
        assert isinstance(frame, av.VideoFrame)
        yield frame


def _gif_palette(reader: FrameSource, times: list[Fraction], resize: Resize, size: Size) -> av.VideoFrame:
    """Pass 1: one 256-colour palette for the whole animation from every frame's colours (``stats_mode=diff``
    weighs what moves, which is where banding shows)."""
    graph = av.filter.Graph()
    source = graph.add_buffer(width=size.width, height=size.height, format=_RGB24, time_base=Fraction(1, 1000))
    palettegen = graph.add("palettegen", "stats_mode=diff")
    sink = graph.add("buffersink")
    source.link_to(palettegen)
    palettegen.link_to(sink)
    graph.configure()
    for index, picked in enumerate(reader.frames_at(times)):
        frame = _rgb_frame(resize.apply(picked.frame))
        frame.pts, frame.time_base = index, Fraction(1, 1000)
        source.push(frame)
    source.push(None)
    palettes = list(_drain(graph))
    if not palettes:
        raise InvalidMediaError("palettegen produced no palette")
    return palettes[-1]


def _encode_gif(reader: FrameSource, times: list[Fraction], resize: Resize, size: Size, fps: int) -> bytes:
    palette = _gif_palette(reader, times, resize, size)
    graph = av.filter.Graph()
    frames_in = graph.add_buffer(width=size.width, height=size.height, format=_RGB24, time_base=Fraction(1, fps))
    palette_in = graph.add_buffer(width=palette.width, height=palette.height, format=palette.format,
                                  time_base=Fraction(1, fps))
    # Ordered (Bayer) dithering: stable from frame to frame, so the animation does not shimmer as error
    # diffusion would; diff_mode=rectangle re-dithers only what changed.
    paletteuse = graph.add("paletteuse", "dither=bayer:bayer_scale=5:diff_mode=rectangle")
    sink = graph.add("buffersink")
    frames_in.link_to(paletteuse, 0, 0)
    palette_in.link_to(paletteuse, 0, 1)
    paletteuse.link_to(sink)
    graph.configure()
    palette.pts, palette.time_base = 0, Fraction(1, fps)
    palette_in.push(palette)
    palette_in.push(None)  # paletteuse keeps using the last palette after its input ends
    out = io.BytesIO()
    with av.open(out, "w", format="gif") as container:  # the gif muxer loops forever by default
        stream: Any = container.add_stream("gif", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size.width, size.height, "pal8"

        def mux(frames: Iterator[av.VideoFrame]) -> None:
            for frame in frames:
                for packet in stream.encode(frame):
                    container.mux(packet)

        for index, picked in enumerate(reader.frames_at(times)):
            frame = _rgb_frame(resize.apply(picked.frame))
            frame.pts, frame.time_base = index, Fraction(1, fps)
            frames_in.push(frame)
            mux(_drain(graph))
        frames_in.push(None)
        mux(_drain(graph))
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def _encode_animated_webp(reader: FrameSource, times: list[Fraction], resize: Resize, size: Size,
                          fps: int) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="webp", options={"loop": "0"}) as container:  # loop 0: forever, like GIF
        stream: Any = container.add_stream("libwebp_anim", rate=fps, options={"quality": _ANIMATED_WEBP_QUALITY})
        stream.width, stream.height, stream.pix_fmt = size.width, size.height, "yuv420p"
        for index, picked in enumerate(reader.frames_at(times)):
            frame = _rgb_frame(resize.apply(picked.frame)).reformat(format="yuv420p", interpolation=_INTERPOLATION)
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def render_animated(frames: FrameSource, start: Fraction, end: Fraction, fps: int, resize: Resize,
                    format: AnimatedFormat) -> AnimatedImage:
    """``ceil((end - start) × fps)`` frames, frame *k* being the exact frame at ``start + k / fps``, as a
    looping GIF or animated WebP. A GIF reads the range twice (palette, then pixels) rather than holding every
    frame; GIF delays are whole centiseconds, so at 30 fps they alternate 3 and 4. libwebp's animation encoder
    merges frames identical to the one before, so a still stretch has fewer frames, each shown longer."""
    if end <= start or fps < 1:
        raise ValueError(f"an animation needs end > start and fps >= 1 (got {start}..{end} at {fps})")
    times = _sample_times(start, end, fps)
    size = resize.output_size(frames.size)
    if format == "gif":
        data = _encode_gif(frames, times, resize, size, fps)
    elif format == "webp":
        data = _encode_animated_webp(frames, times, resize, size, fps)
    else:
        raise ValueError(f"unknown animated image format {format!r}")
    return AnimatedImage(data, format, size, len(times), fps)


# --- storyboards ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoryboardCue:
    """One tile: the time range it previews and where it sits in the sprite (pixels)."""

    start: Fraction
    end: Fraction
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class StoryboardLayout:
    """``count`` tiles of ``tile`` size, row by row in a ``columns``×``rows`` grid; tile *i* shows the frame at
    ``i × duration / count`` and previews ``[i, i + 1) × duration / count``."""

    duration: Fraction
    count: int
    columns: int
    rows: int
    tile: Size

    def __post_init__(self) -> None:
        if self.duration <= 0 or self.count < 1 or self.columns * self.rows < self.count:
            raise ValueError(f"inconsistent storyboard layout {self}")

    @property
    def sprite(self) -> Size:
        return Size(self.columns * self.tile.width, self.rows * self.tile.height)

    @property
    def interval(self) -> Fraction:
        return self.duration / self.count

    def cues(self) -> list[StoryboardCue]:
        cues = []
        for index in range(self.count):
            row, column = divmod(index, self.columns)
            cues.append(StoryboardCue(index * self.interval, (index + 1) * self.interval,
                                      column * self.tile.width, row * self.tile.height,
                                      self.tile.width, self.tile.height))
        return cues


def plan_storyboard(duration: Fraction, source: Size, *, tile_width: int = 256, max_tiles: int = 100,
                    min_interval: Fraction = Fraction(1)) -> StoryboardLayout:
    """One tile per ``min_interval`` of video, at most ``max_tiles`` (longer videos get longer intervals),
    evenly spaced; tiles ``tile_width`` wide (never wider than the source), the grid as square as it can be."""
    if duration <= 0:
        raise ValueError("a storyboard needs a positive duration")
    count = min(max_tiles, max(1, math.ceil(duration / min_interval)))
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    width = min(tile_width, source.width)
    tile = Size(width, max(1, round(Fraction(source.height * width, source.width))))
    return StoryboardLayout(duration, count, columns, rows, tile)


def render_storyboard(frames: FrameSource, layout: StoryboardLayout, format: StillFormat) -> StillImage:
    """The sprite: each tile the exact frame at its cue's start, unused grid cells black. Costs one seek (or
    segment) and at most a GOP of decoding per tile, or one forward decode when the tiles are close together."""
    sprite = np.zeros((layout.sprite.height, layout.sprite.width, 3), dtype=np.uint8)
    resize = Resize(layout.tile.width, layout.tile.height, "stretch")
    cues = layout.cues()
    for cue, picked in zip(cues, frames.frames_at([cue.start for cue in cues]), strict=True):
        sprite[cue.y:cue.y + cue.height, cue.x:cue.x + cue.width] = resize.apply(picked.frame)
    return StillImage(encode_still(sprite, format), format, layout.sprite, None)


def _vtt_time(seconds: Fraction, *, up: bool = False) -> str:
    millis = math.ceil(seconds * 1000) if up else round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def storyboard_vtt(layout: StoryboardLayout, image_url: str) -> str:
    """WebVTT whose cues map contiguous time ranges covering ``[0, duration]`` to ``image_url#xywh=x,y,w,h``
    (the media-fragment syntax players use for thumbnail previews). Boundaries are rounded to milliseconds once,
    so each cue ends exactly where the next starts; the last ends at the duration rounded up."""
    lines = ["WEBVTT", ""]
    cues = layout.cues()
    for index, cue in enumerate(cues):
        end = _vtt_time(cue.end, up=True) if index == len(cues) - 1 else _vtt_time(cue.end)
        lines += [f"{_vtt_time(cue.start)} --> {end}",
                  f"{image_url}#xywh={cue.x},{cue.y},{cue.width},{cue.height}", ""]
    return "\n".join(lines)
