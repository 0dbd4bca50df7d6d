"""Images of an asset by playback id: thumbnails, animated GIF/WebP and storyboards (Mux's ``image.mux.com``).

What a request goes through, Ray- and HTTP-free:

1. :func:`resolve_source`: the playback id → its asset, through stream delivery's checks
   (:class:`kinoray.control.resolver.PlaybackResolver`: signed ids need a valid ``?token=`` for the image's
   audience, ``t`` thumbnail, ``g`` animated, ``s`` storyboard; the asset must be ready), then it must have video.
2. ``*Params.parse``: query values → bounded, canonical parameters (``InvalidParametersError`` otherwise).
3. :class:`ImageCache`: the image is read from ``assets/<id>/images/<hash>.<ext>`` where ``hash`` covers the
   canonical parameters and :data:`RENDER_VERSION`; on a miss it is rendered by :mod:`kinoray.media.images`
   and stored (temporary key, then rename). Thumbnails come from the top rendition's progressive MP4
   (``media/highest.mp4``: full quality, one seek); animations and storyboards from the CMAF segments of the
   smallest rendition at least as large as what they draw (located through ``media/manifest.mpd``), which
   makes a 100-tile storyboard of a long 1080p video cost seconds instead of tens of seconds.

Single flight: concurrent requests for the same missing image in one process wait on a per-key lock and the
first renders it; the others then read what it stored. Across replicas there is no lock: the worst case is that
two replicas render the same image at the same time and both store it, each with an atomic rename of identical
parameters' output, so readers always see one whole file and the duplicate costs only CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, cast

from kinoray.control.playback import AUDIENCES as PLAYBACK_AUDIENCES
from kinoray.control.playback import Playback, text_etag
from kinoray.control.resolver import PlaybackResolver
from kinoray.errors import InvalidParametersError, NotFoundError, StorageError
from kinoray.media import images as media_images
from kinoray.media.images import (
    ANIMATED_FORMATS,
    FIT_MODES,
    MEDIA_TYPES,
    STILL_FORMATS,
    AnimatedFormat,
    FitMode,
    FrameReader,
    Resize,
    SegmentedReader,
    SegmentedRendition,
    Size,
    StillFormat,
)
from kinoray.store.objects import ObjectStore

__all__ = [
    "ANIMATED_DEFAULT_FPS",
    "ANIMATED_DEFAULT_SECONDS",
    "ANIMATED_DEFAULT_WIDTH",
    "ANIMATED_MAX_FPS",
    "ANIMATED_MAX_SECONDS",
    "ANIMATED_MAX_SIZE",
    "ANIMATED_MIN_SECONDS",
    "AUDIENCES",
    "RENDERS",
    "RENDER_VERSION",
    "STORYBOARD_MAX_TILES",
    "STORYBOARD_TILE_WIDTH",
    "THUMBNAIL_MAX_SIZE",
    "AnimatedParams",
    "ImageCache",
    "ImageKind",
    "ImageResult",
    "ImageSource",
    "StoryboardParams",
    "ThumbnailParams",
    "resolve_source",
]

log = logging.getLogger(__name__)

#: Part of every cache key: bump it when rendering changes, so stored images made the old way are not served.
RENDER_VERSION = 1

THUMBNAIL_MAX_SIZE = 1920
ANIMATED_MAX_SIZE = 640  # Mux: at most 640 px wide; kinoray bounds the height the same way
ANIMATED_DEFAULT_WIDTH = 320
ANIMATED_MIN_SECONDS = Fraction(1, 4)
ANIMATED_MAX_SECONDS = Fraction(10)
ANIMATED_DEFAULT_SECONDS = Fraction(5)
ANIMATED_MAX_FPS = 30
ANIMATED_DEFAULT_FPS = 15
STORYBOARD_MAX_TILES = 100
STORYBOARD_TILE_WIDTH = 256

ImageKind = Literal["thumbnail", "animated", "storyboard"]
#: JWT ``aud`` claim a signed playback id's token must carry for each kind of image (Mux's t/g/s).
AUDIENCES: dict[ImageKind, str] = {"thumbnail": PLAYBACK_AUDIENCES["thumbnail"],
                                   "animated": PLAYBACK_AUDIENCES["gif"],
                                   "storyboard": PLAYBACK_AUDIENCES["storyboard"]}

#: Images rendered by this process, by kind (what the single-flight tests and the log count).
RENDERS: Counter[str] = Counter()
_renders_lock = threading.Lock()


# --- which asset, and may the caller see it ------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSource:
    """A ready asset with video, reached through a playback id the caller may use."""

    playback: Playback  # policy, and for signed ids the verified token and its expiry
    duration: Fraction  # seconds
    storage_prefix: str  # assets/<asset_id>

    @property
    def media_key(self) -> str:
        """The top rendition's progressive MP4, which thumbnails are cut from."""
        return f"{self.storage_prefix}/media/highest.mp4"

    def image_key(self, digest: str, extension: str) -> str:
        return f"{self.storage_prefix}/images/{digest}.{extension}"


def resolve_source(resolver: PlaybackResolver, playback_id: str, *, token: str | None,
                   kind: ImageKind) -> ImageSource:
    """The asset behind ``playback_id`` if images of it can be served to this caller: stream delivery's checks
    (:meth:`kinoray.control.resolver.PlaybackResolver.resolve`, with the image's JWT audience), then video
    present.

    Raises:
        NotFoundError: unknown or malformed id (no path or dot ever reaches storage), errored or audio-only asset.
        PlaybackForbiddenError: a signed playback id without a valid token for ``kind``'s audience.
        AssetNotReadyError: the asset is still preparing.
    """
    resolved = resolver.resolve(playback_id, token, AUDIENCES[kind])
    record, playback = resolved.record, resolved.playback
    if not record.has_video:
        raise NotFoundError(f"playback id {playback.playback_id} is audio-only: it has no images")
    if not record.duration or record.duration <= 0:
        raise NotFoundError(f"playback id {playback.playback_id} has no video duration: it has no images")
    return ImageSource(playback=playback, duration=_exact(record.duration), storage_prefix=record.storage_prefix)


# --- parameters ----------------------------------------------------------------------------------------------


def _exact(value: float) -> Fraction:
    """A float as the decimal it was written as (``2.5`` → 5/2, ``0.1`` → 1/10, not the binary expansion)."""
    return Fraction(repr(float(value)))


def _seconds(name: str, value: float | None) -> Fraction | None:
    if value is None:
        return None
    if not math.isfinite(value) or value < 0:
        raise InvalidParametersError(f"{name} must be a finite number of seconds >= 0, got {value}")
    return _exact(value)


def _dimension(name: str, value: int | None, maximum: int) -> int | None:
    if value is not None and not 1 <= value <= maximum:
        raise InvalidParametersError(f"{name} must be between 1 and {maximum} pixels, got {value}")
    return value


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidParametersError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _digest(kind: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps({"kind": kind, "version": RENDER_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ThumbnailParams:
    """``time`` (default: the middle; past the end: the last frame), ``width``/``height`` (1–1920),
    ``fit_mode`` (preserve | stretch | crop | pad). No side of the result exceeds 1920, also when a side is left
    to follow the aspect ratio or both are the source's (a 2160p top rendition gives a 1920x1080 default)."""

    format: StillFormat
    time: Fraction
    resize: Resize

    @classmethod
    def parse(cls, source: ImageSource, format: str, *, time: float | None = None, width: int | None = None,
              height: int | None = None, fit_mode: str = "preserve") -> ThumbnailParams:
        fit = cast(FitMode, _choice("fit_mode", fit_mode, FIT_MODES))
        at = _seconds("time", time)
        at = source.duration / 2 if at is None else min(at, source.duration)
        return cls(cast(StillFormat, _choice("format", format, STILL_FORMATS)),
                   at, Resize(_dimension("width", width, THUMBNAIL_MAX_SIZE),
                              _dimension("height", height, THUMBNAIL_MAX_SIZE), fit, THUMBNAIL_MAX_SIZE))

    def digest(self) -> str:
        return _digest("thumbnail", {"format": self.format, "time": str(self.time), "width": self.resize.width,
                                     "height": self.resize.height, "fit_mode": self.resize.fit_mode,
                                     "max_size": self.resize.max_size})


@dataclass(frozen=True)
class AnimatedParams:
    """``start`` (default 0), ``end`` (default start + 5 s; the span must be 0.25–10 s and is cut at the end of
    the video), ``width``/``height`` (at most 640, and so is the side that follows the aspect ratio; neither
    given: 320 wide; aspect always kept), ``fps`` (1–30, default 15)."""

    format: AnimatedFormat
    start: Fraction
    end: Fraction
    fps: int
    resize: Resize

    @classmethod
    def parse(cls, source: ImageSource, format: str, *, start: float | None = None, end: float | None = None,
              width: int | None = None, height: int | None = None, fps: int | None = None) -> AnimatedParams:
        begin = _seconds("start", start) or Fraction(0)
        finish = _seconds("end", end)
        if finish is None:
            finish = begin + ANIMATED_DEFAULT_SECONDS
        elif not ANIMATED_MIN_SECONDS <= finish - begin <= ANIMATED_MAX_SECONDS:
            raise InvalidParametersError(
                f"end - start must be between {float(ANIMATED_MIN_SECONDS):g} and "
                f"{float(ANIMATED_MAX_SECONDS):g} seconds, got {float(finish - begin):g}")
        if begin >= source.duration:
            raise InvalidParametersError(f"start {float(begin):g} is not before the end of the video "
                                         f"({float(source.duration):g} s)")
        rate = ANIMATED_DEFAULT_FPS if fps is None else fps
        if not 1 <= rate <= ANIMATED_MAX_FPS:
            raise InvalidParametersError(f"fps must be between 1 and {ANIMATED_MAX_FPS}, got {rate}")
        box_width = _dimension("width", width, ANIMATED_MAX_SIZE)
        box_height = _dimension("height", height, ANIMATED_MAX_SIZE)
        if box_width is None and box_height is None:
            box_width = ANIMATED_DEFAULT_WIDTH
        return cls(cast(AnimatedFormat, _choice("format", format, ANIMATED_FORMATS)), begin,
                   min(finish, source.duration), rate, Resize(box_width, box_height, "preserve", ANIMATED_MAX_SIZE))

    def digest(self) -> str:
        return _digest("animated", {"format": self.format, "start": str(self.start), "end": str(self.end),
                                    "fps": self.fps, "width": self.resize.width, "height": self.resize.height,
                                    "max_size": self.resize.max_size})


@dataclass(frozen=True)
class StoryboardParams:
    """``storyboard.{jpg,png,webp}`` is the sprite; ``storyboard.vtt`` maps time ranges to its tiles and refers
    to the sprite in ``image_format`` (``?format=``, default jpg)."""

    format: Literal["jpg", "png", "webp", "vtt"]
    image_format: StillFormat

    @classmethod
    def parse(cls, format: str, *, image_format: str | None = None) -> StoryboardParams:
        kind = cast(Literal["jpg", "png", "webp", "vtt"], _choice("format", format, (*STILL_FORMATS, "vtt")))
        if kind != "vtt":
            if image_format is not None:
                raise InvalidParametersError("?format= applies to storyboard.vtt only")
            image_format = kind
        return cls(kind, cast(StillFormat, _choice("format", image_format or "jpg", STILL_FORMATS)))

    def digest(self) -> str:
        return _digest("storyboard", {"format": self.format, "image_format": self.image_format,
                                      "tile_width": STORYBOARD_TILE_WIDTH, "max_tiles": STORYBOARD_MAX_TILES})


# --- rendering and the cache ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageResult:
    body: bytes
    media_type: str
    etag: str  # strong: a digest of the bytes
    key: str  # where it is stored
    rendered: bool  # this request rendered it (a cache miss)


class _KeyLocks:
    """One lock per key while anyone holds or waits for it (the table never grows past the keys in flight)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


_LOCKS = _KeyLocks()


@dataclass
class ImageCache:
    """Images stored beside the asset's media, rendered on first request (see the module docstring)."""

    store: ObjectStore
    locks: _KeyLocks = field(default_factory=lambda: _LOCKS)

    def _read(self, key: str) -> bytes | None:
        try:
            return self.store.get_bytes(key)
        except StorageError as error:
            if isinstance(error.__cause__, FileNotFoundError):
                return None
            raise

    def _get_or_render(self, kind: ImageKind, key: str, render: Callable[[], bytes]) -> tuple[bytes, bool]:
        body = self._read(key)
        if body is not None:
            return body, False
        with self.locks.hold(key):
            body = self._read(key)  # rendered by whoever held the lock before us
            if body is not None:
                return body, False
            started = time.perf_counter()
            body = render()
            self.store.put_bytes(body, key)
            with _renders_lock:
                RENDERS[kind] += 1
            log.info("image rendered", extra={"kind": kind, "key": key, "bytes": len(body),
                                              "seconds": round(time.perf_counter() - started, 3)})
            return body, True

    def _top_rendition(self, source: ImageSource) -> FrameReader:
        """A reader over ``highest.mp4``: the file itself on a local store, ranged reads through the store's own
        client (its endpoint and credentials) on S3."""
        if not self.store.exists(source.media_key):
            raise NotFoundError(f"playback id {source.playback.playback_id} has no stored video rendition")
        if self.store.is_local:
            return FrameReader(self.store.path(source.media_key))
        return FrameReader(self.store.open(source.media_key))

    def _renditions(self, source: ImageSource) -> list[SegmentedRendition]:
        """The asset's video renditions from its stored DASH MPD, largest first."""
        mpd = self._read(f"{source.storage_prefix}/media/manifest.mpd")
        renditions = media_images.dash_video_renditions(mpd.decode()) if mpd is not None else []
        if not renditions:
            raise NotFoundError(f"playback id {source.playback.playback_id} has no stored video rendition")
        return renditions

    def _segments(self, source: ImageSource, renditions: list[SegmentedRendition], size: Size) -> SegmentedReader:
        """A reader over the smallest rendition at least ``size`` (else the largest): animations and storyboards
        are small, and decoding a small rendition costs a fraction of the top one."""
        covering = [rendition for rendition in renditions
                    if rendition.size.width >= size.width and rendition.size.height >= size.height]
        rendition = covering[-1] if covering else renditions[0]
        prefix = f"{source.storage_prefix}/media"
        return SegmentedReader(rendition, lambda name: self.store.get_bytes(f"{prefix}/{name}"))

    def thumbnail(self, source: ImageSource, params: ThumbnailParams) -> ImageResult:
        """From the top rendition's progressive MP4: full quality, one seek."""
        def render() -> bytes:
            with self._top_rendition(source) as reader:
                return media_images.render_thumbnail(reader, params.time, params.resize, params.format).data

        key = source.image_key(params.digest(), params.format)
        body, rendered = self._get_or_render("thumbnail", key, render)
        return ImageResult(body, MEDIA_TYPES[params.format], text_etag(body), key, rendered)

    def animated(self, source: ImageSource, params: AnimatedParams) -> ImageResult:
        def render() -> bytes:
            renditions = self._renditions(source)
            # The size follows the top rendition's aspect ratio (a smaller rung's is rounded to even pixels)
            size = params.resize.output_size(renditions[0].size)
            with self._segments(source, renditions, size) as reader:
                return media_images.render_animated(reader, params.start, params.end, params.fps,
                                                    Resize(size.width, size.height, "stretch"), params.format).data

        key = source.image_key(params.digest(), params.format)
        body, rendered = self._get_or_render("animated", key, render)
        return ImageResult(body, MEDIA_TYPES[params.format], text_etag(body), key, rendered)

    def storyboard(self, source: ImageSource, params: StoryboardParams) -> ImageResult:
        """The sprite, or the WebVTT. The VTT is stored without a token and refers to the sprite by a URL
        relative to its own (``storyboard.jpg#xywh=…``); a signed id's token is added to those URLs as it is
        served, so a player fetching the sprite passes the same check."""
        def render() -> bytes:
            renditions = self._renditions(source)
            layout = media_images.plan_storyboard(source.duration, renditions[0].size,
                                                  tile_width=STORYBOARD_TILE_WIDTH, max_tiles=STORYBOARD_MAX_TILES)
            if params.format == "vtt":
                return media_images.storyboard_vtt(layout, f"storyboard.{params.image_format}").encode()
            with self._segments(source, renditions, layout.tile) as reader:
                return media_images.render_storyboard(reader, layout, params.image_format).data

        key = source.image_key(params.digest(), params.format)
        body, rendered = self._get_or_render("storyboard", key, render)
        query = source.playback.query
        if params.format == "vtt" and query:
            sprite = f"storyboard.{params.image_format}"
            body = body.replace(f"{sprite}#".encode(), f"{sprite}{query}#".encode())
        return ImageResult(body, MEDIA_TYPES[params.format], text_etag(body), key, rendered)
