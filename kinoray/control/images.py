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

Caps (:class:`ImageGuard`, ``KINORAY_IMAGES__*``; :class:`kinoray.settings.ImageSettings`). Anyone may ask for
any number of distinct URLs, so what a miss costs is bounded; a stored image is always served without a check.

- Per client (the caller's address, as the route reads it): a token bucket of new renders, the limiter of
  :mod:`kinoray.control.ratelimit` (in Redis when ``KINORAY_REDIS_URL`` is set), key ``image-render:<client>``.
  Empty: ``429 too_many_requests`` with ``Retry-After``.
- Per process: a render budget, ``render_seconds_per_window`` seconds of rendering per
  ``render_window_seconds``, refilled continuously. A render is charged its wall-clock time (the decoder's slice
  threads may add CPU on top); it starts only while some budget is left, and one that ends past it leaves a
  debt. At most ``max_concurrent_renders`` run at once; a render waits ``render_wait_seconds`` for a slot.
  Spent, or no slot in time: 429 with ``Retry-After``.
- Per asset: what is stored under ``assets/<id>/images/`` (committed objects and their sizes from a listing of
  the store, trusted for ``usage_cache_seconds`` plus what this process stored since) stays within
  ``max_variants_per_asset`` objects and ``max_bytes_per_asset`` bytes: an image that would pass either is
  rendered and served but not stored (``X-Image-Cache: bypass``). One process checks and stores under a
  per-asset lock, so it never passes the caps; several processes (edge workers, replicas) may together pass them
  by what the others stored within one ``usage_cache_seconds`` (0: list before every store).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import posixpath
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, cast

from kinoray.control.playback import AUDIENCES as PLAYBACK_AUDIENCES
from kinoray.control.playback import Playback, text_etag
from kinoray.control.ratelimit import RateLimiter
from kinoray.control.resolver import PlaybackResolver, TtlCache
from kinoray.control.restrictions import Viewer
from kinoray.errors import (
    AssetNotReadyError,
    InvalidParametersError,
    NotFoundError,
    RateLimitedError,
    StorageError,
)
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
from kinoray.settings import ImageSettings, Settings
from kinoray.store import keys
from kinoray.store.objects import ObjectStore

if TYPE_CHECKING:
    from kinoray.control.platform import Platform

__all__ = [
    "ANIMATED_DEFAULT_FPS",
    "ANIMATED_DEFAULT_SECONDS",
    "ANIMATED_DEFAULT_WIDTH",
    "ANIMATED_MAX_FPS",
    "ANIMATED_MAX_SECONDS",
    "ANIMATED_MAX_SIZE",
    "ANIMATED_MIN_SECONDS",
    "AUDIENCES",
    "LIVE_THUMBNAIL_SECONDS",
    "RENDERS",
    "RENDER_VERSION",
    "STORYBOARD_MAX_TILES",
    "STORYBOARD_TILE_WIDTH",
    "THUMBNAIL_MAX_SIZE",
    "AnimatedParams",
    "ImageCache",
    "ImageGuard",
    "ImageKind",
    "ImageResult",
    "ImageSource",
    "ImageStorage",
    "ImageUsage",
    "RenderBudget",
    "StoryboardParams",
    "ThumbnailParams",
    "image_options",
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
        return f"{self.storage_prefix}/{keys.MEDIA_DIR}/{keys.HIGHEST_MP4}"

    @property
    def images_prefix(self) -> str:
        """Where its images are stored: what the per-asset caps count."""
        return keys.images_prefix(self.storage_prefix)

    def image_key(self, digest: str, extension: str) -> str:
        return f"{self.images_prefix}/{digest}.{extension}"


def resolve_source(resolver: PlaybackResolver, playback_id: str, *, token: str | None,
                   kind: ImageKind, viewer: Viewer | None = None) -> ImageSource:
    """The asset behind ``playback_id`` if images of it can be served to this caller: stream delivery's checks
    (:meth:`kinoray.control.resolver.PlaybackResolver.resolve`, with the image's JWT audience), then video
    present.

    Raises:
        NotFoundError: unknown or malformed id (no path or dot ever reaches storage), errored or audio-only asset.
        PlaybackForbiddenError: a signed playback id without a valid token for ``kind``'s audience, or whose
            token's playback restriction refuses ``viewer`` (its Referer and User-Agent).
        AssetNotReadyError: the asset is still preparing.
    """
    resolved = resolver.resolve(playback_id, token, AUDIENCES[kind], viewer)
    record, playback = resolved.record, resolved.playback
    if not record.has_video:
        raise NotFoundError(f"playback id {playback.playback_id} is audio-only: it has no images")
    if playback.live:
        if kind != "thumbnail":
            raise NotFoundError(f"playback id {playback.playback_id} is a live stream's: it has thumbnails only "
                                "(animated images and storyboards are made of its recordings)")
        return ImageSource(playback=playback, duration=Fraction(0), storage_prefix=record.storage_prefix)
    if not record.duration or record.duration <= 0:
        raise NotFoundError(f"playback id {playback.playback_id} has no video duration: it has no images")
    return ImageSource(playback=playback, duration=_exact(record.duration), storage_prefix=record.storage_prefix)


# --- parameters ----------------------------------------------------------------------------------------------

#: How each image option is read from a signed token's claims (Mux's SDKs write them as strings or numbers).
_CLAIM_TYPES: dict[str, type] = {"time": float, "start": float, "end": float, "width": int, "height": int,
                                 "fps": int, "fit_mode": str, "format": str}


def image_options(source: ImageSource, query: Mapping[str, object]) -> dict[str, Any]:
    """The options an image is made with: for a signed playback id those in its verified token's claims (as Mux
    does: the URL's query is ignored, so a viewer cannot ask for more than the token grants), else ``query``'s.
    Only the names in ``query`` are read; ``None`` values are left out.

    Raises:
        InvalidParametersError: a claim of the wrong type.
    """
    claims = source.playback.claims
    if claims is None:
        return {name: value for name, value in query.items() if value is not None}
    options: dict[str, Any] = {}
    for name in query:
        value = claims.get(name)
        if value is None:
            continue
        kind = _CLAIM_TYPES[name]
        try:
            options[name] = kind(value) if kind is not int else int(float(value))
        except (TypeError, ValueError):
            raise InvalidParametersError(f"token claim {name} must be a {kind.__name__}, got {value!r}") from None
    return options


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
    key: str  # where it is stored (or would be, when not stored)
    rendered: bool  # this request rendered it (a cache miss)
    stored: bool = True  # False: rendered and served, not stored (the asset's image caps are reached)

    @property
    def cache_status(self) -> str:
        """``X-Image-Cache``: ``hit`` (read from storage), ``miss`` (rendered and stored), ``bypass`` (rendered,
        not stored)."""
        return "hit" if not self.rendered else "miss" if self.stored else "bypass"


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


# --- caps on making images ------------------------------------------------------------------------------------


class RenderBudget:
    """One process's rendering: ``seconds`` of it per ``window`` seconds, ``concurrent`` renders at once.

    The budget is a bucket holding at most ``seconds``, refilled at ``seconds / window`` per second. A render may
    start while the bucket holds more than nothing; its wall-clock time is taken out when it ends, so the bucket
    can go below zero and the debt holds back the renders after it. ``slot`` waits at most ``wait`` seconds for
    one of the ``concurrent`` places.
    """

    def __init__(self, seconds: float, window: float, concurrent: int, wait: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.rate, self.concurrent, self.wait = seconds, seconds / window, concurrent, wait
        self.clock = clock
        self._level, self._at = float(seconds), clock()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrent)

    def _refill(self) -> float:
        now = self.clock()
        self._level = min(float(self.seconds), self._level + max(0.0, now - self._at) * self.rate)
        self._at = now
        return self._level

    def left(self) -> float:
        """Seconds of rendering left now (negative: a debt)."""
        with self._lock:
            return self._refill()

    def check(self) -> None:
        """Raises ``RateLimitedError`` (``retry_after``: until the bucket holds something again) when spent."""
        with self._lock:
            level = self._refill()
        if level <= 0:
            raise RateLimitedError(
                f"image render budget of {self.seconds:g} s per {self.seconds / self.rate:g} s is spent on this "
                f"server: stored images are served, new ones again in a moment",
                retry_after=max(1.0, -level / self.rate), limit=math.ceil(self.seconds))

    def charge(self, seconds: float) -> None:
        with self._lock:
            self._refill()
            self._level -= seconds

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.wait):
            raise RateLimitedError(f"{self.concurrent} images are being rendered on this server and none finished "
                                   f"within {self.wait:g} s", retry_after=1.0, limit=self.concurrent)
        try:
            yield
        finally:
            self._slots.release()


@dataclass(frozen=True)
class ImageUsage:
    """What is stored under one asset's images prefix."""

    variants: int
    bytes: int


@dataclass
class _Listing:
    sizes: dict[str, int]  # committed key -> bytes
    listed_at: float


def _stored_sizes(store: ObjectStore, prefix: str) -> dict[str, int]:
    """Committed objects under ``prefix`` (the store's listing, temporary objects left out) and their sizes
    (the filesystem's detailed listing: a stat per file locally, the LIST answer on S3)."""
    keys = set(store.list(prefix))  # committed keys, the store's own listing (temporary objects left out)
    if not keys:
        return {}
    root = store.root.rstrip("/") + "/"
    found = store.fs.find(store.path(prefix), detail=True)
    sizes = {path.removeprefix(root): int(info.get("size") or 0) for path, info in found.items()}
    return {key: sizes[key] for key in keys if key in sizes}


class ImageStorage:
    """Per-asset accounting of stored images, enforcing ``max_variants`` objects and ``max_bytes`` bytes.

    An asset's usage is the store's listing of its images prefix, taken again once older than ``ttl`` seconds
    and meanwhile kept up to date with what this process stores. :meth:`store_if_room` checks and stores under a
    lock per asset, so one process never passes the caps; other processes' stores are seen at the next listing.
    """

    def __init__(self, store: ObjectStore, *, max_variants: int, max_bytes: int, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.max_variants, self.max_bytes, self.ttl, self.clock = store, max_variants, max_bytes, ttl, clock
        self._listings: dict[str, _Listing] = {}
        self._guard = threading.Lock()
        self._locks = _KeyLocks()

    def _listing(self, prefix: str) -> _Listing:
        """Call with ``prefix``'s lock held."""
        now = self.clock()
        with self._guard:
            listing = self._listings.get(prefix)
        if listing is None or self.ttl <= 0 or now - listing.listed_at >= self.ttl:
            listing = _Listing(_stored_sizes(self.store, prefix), now)
            with self._guard:
                for stale in [key for key, old in self._listings.items() if now - old.listed_at >= self.ttl]:
                    del self._listings[stale]  # assets not stored to for a while leave the table
                self._listings[prefix] = listing
        return listing

    def usage(self, prefix: str) -> ImageUsage:
        with self._locks.hold(prefix):
            sizes = self._listing(prefix).sizes
            return ImageUsage(len(sizes), sum(sizes.values()))

    def store_if_room(self, prefix: str, key: str, body: bytes) -> bool:
        """Store ``body`` at ``key`` if the asset stays within both caps with it; whether it was stored. A listing
        that fails leaves the image unstored (it is still served)."""
        with self._locks.hold(prefix):
            try:
                listing = self._listing(prefix)
            except Exception as error:  # noqa: BLE001 - the store's own errors and the filesystem's
                log.warning("image not stored: its asset's images could not be listed",
                            extra={"key": key, "error": str(error)})
                return False
            sizes = dict(listing.sizes)
            sizes[key] = len(body)
            if len(sizes) > self.max_variants or sum(sizes.values()) > self.max_bytes:
                log.info("image not stored: its asset's image storage cap is reached",
                         extra={"key": key, "bytes": len(body), "variants": len(listing.sizes),
                                "stored_bytes": sum(listing.sizes.values())})
                return False
            self.store.put_bytes(body, key)
            listing.sizes = sizes
            return True


@dataclass
class ImageGuard:
    """The caps of one process (module docstring): per-client new renders, the render budget, per-asset storage."""

    settings: ImageSettings
    limiter: RateLimiter  # one token per new render, keyed by client
    budget: RenderBudget
    storage: ImageStorage

    @classmethod
    def from_settings(cls, settings: Settings, store: ObjectStore) -> ImageGuard:
        images = settings.images
        limiter = RateLimiter.from_settings(settings, images.client_renders_per_second, images.client_render_burst)
        return cls(images, limiter,
                   RenderBudget(images.render_seconds_per_window, images.render_window_seconds,
                                images.max_concurrent_renders, images.render_wait_seconds),
                   ImageStorage(store, max_variants=images.max_variants_per_asset,
                                max_bytes=images.max_bytes_per_asset, ttl=images.usage_cache_seconds))

    def _charge_client(self, client: str) -> None:
        decision = self.limiter.hit(f"image-render:{client}")
        if not decision.allowed:
            raise RateLimitedError(
                f"image render limit of {self.settings.client_renders_per_second:g} new images/s per client "
                f"(burst {decision.limit}) exceeded: stored images are served, new ones again in a moment",
                decision.retry_after, decision.limit)

    def render(self, client: str, render: Callable[[], bytes]) -> bytes:
        """``render()`` if the budget has some left, ``client`` may have another image made and a slot frees in
        time; its time is charged to the budget.

        Raises:
            RateLimitedError: any of those is not so (``retry_after`` says when to try again).
        """
        self.budget.check()  # before the client's token: a refusal for the server's sake costs the client nothing
        self._charge_client(client)
        with self.budget.slot():
            self.budget.check()  # spent by the renders that ran while this one waited
            started = time.perf_counter()
            try:
                return render()
            finally:
                self.budget.charge(time.perf_counter() - started)

    def close(self) -> None:
        self.limiter.close()


_GUARDS: dict[int, tuple[weakref.ref[Any], ImageGuard]] = {}
_guards_lock = threading.Lock()


def guard_for(platform: Platform) -> ImageGuard:
    """The process's :class:`ImageGuard` for ``platform`` (made on first use from its settings and store, dropped
    with it)."""
    with _guards_lock:
        entry = _GUARDS.get(id(platform))
        if entry is not None and entry[0]() is platform:
            return entry[1]
        guard = ImageGuard.from_settings(platform.settings, platform.store)
        key = id(platform)

        def forget(_: weakref.ref[Any]) -> None:
            with _guards_lock:
                if _GUARDS.get(key, (None, None))[1] is guard:
                    del _GUARDS[key]
            guard.close()

        _GUARDS[key] = (weakref.ref(platform, forget), guard)
        return guard


@dataclass
class ImageCache:
    """Images stored beside the asset's media, rendered on first request (see the module docstring). With a
    ``guard``, a render is allowed and stored within its caps, and charged to ``client``; without one (tools,
    tests), every miss is rendered and stored."""

    store: ObjectStore
    locks: _KeyLocks = field(default_factory=lambda: _LOCKS)
    guard: ImageGuard | None = None
    client: str = "unknown"

    def _read(self, key: str) -> bytes | None:
        try:
            return self.store.get_bytes(key)
        except StorageError as error:
            if isinstance(error.__cause__, FileNotFoundError):
                return None
            raise

    def _get_or_render(self, kind: ImageKind, source: ImageSource, key: str,
                       render: Callable[[], bytes]) -> tuple[bytes, bool, bool]:
        """``(body, rendered, stored)``."""
        body = self._read(key)
        if body is not None:
            return body, False, True
        with self.locks.hold(key):
            body = self._read(key)  # rendered by whoever held the lock before us
            if body is not None:
                return body, False, True
            started = time.perf_counter()
            if self.guard is None:
                body = render()
                self.store.put_bytes(body, key)
                stored = True
            else:
                body = self.guard.render(self.client, render)
                stored = self.guard.storage.store_if_room(source.images_prefix, key, body)
            with _renders_lock:
                RENDERS[kind] += 1
            log.info("image rendered", extra={"kind": kind, "key": key, "bytes": len(body), "stored": stored,
                                              "seconds": round(time.perf_counter() - started, 3)})
            return body, True, stored

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
        mpd = self._read(f"{source.storage_prefix}/{keys.MEDIA_DIR}/{keys.MANIFEST_MPD}")
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
        prefix = f"{source.storage_prefix}/{keys.MEDIA_DIR}"
        return SegmentedReader(rendition, lambda name: self.store.get_bytes(f"{prefix}/{name}"))

    def thumbnail(self, source: ImageSource, params: ThumbnailParams) -> ImageResult:
        """From the top rendition's progressive MP4: full quality, one seek. A live stream's: see
        :meth:`live_thumbnail`."""
        if source.playback.live:
            return self.live_thumbnail(source, params)
        def render() -> bytes:
            with self._top_rendition(source) as reader:
                return media_images.render_thumbnail(reader, params.time, params.resize, params.format).data

        key = source.image_key(params.digest(), params.format)
        body, rendered, stored = self._get_or_render("thumbnail", source, key, render)
        return ImageResult(body, MEDIA_TYPES[params.format], text_etag(body), key, rendered, stored)

    def animated(self, source: ImageSource, params: AnimatedParams) -> ImageResult:
        def render() -> bytes:
            renditions = self._renditions(source)
            # The size follows the top rendition's aspect ratio (a smaller rung's is rounded to even pixels)
            size = params.resize.output_size(renditions[0].size)
            with self._segments(source, renditions, size) as reader:
                return media_images.render_animated(reader, params.start, params.end, params.fps,
                                                    Resize(size.width, size.height, "stretch"), params.format).data

        key = source.image_key(params.digest(), params.format)
        body, rendered, stored = self._get_or_render("animated", source, key, render)
        return ImageResult(body, MEDIA_TYPES[params.format], text_etag(body), key, rendered, stored)

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
        body, rendered, stored = self._get_or_render("storyboard", source, key, render)
        query = source.playback.query
        if params.format == "vtt" and query:
            sprite = f"storyboard.{params.image_format}"
            body = body.replace(f"{sprite}#".encode(), f"{sprite}{query}#".encode())
        return ImageResult(body, MEDIA_TYPES[params.format], text_etag(body), key, rendered, stored)

    def live_thumbnail(self, source: ImageSource, params: ThumbnailParams) -> ImageResult:
        """A live stream's recent frame: the first (key)frame of the newest segment of its top rung, decoded from
        the live output (master playlist → top variant → its newest segment and init segment), resized and
        encoded as asked (``time`` does not apply: it is always the live edge). Kept in this process's memory for
        :data:`LIVE_THUMBNAIL_SECONDS` (a burst of viewers costs one decode), never in storage:
        ``X-Image-Cache`` is ``hit`` from memory, ``bypass`` when made.

        Raises:
            AssetNotReadyError: the stream has no segment yet.
        """
        key = f"{source.storage_prefix}/thumbnail.{params.digest()}.{params.format}"
        fresh, body = _LIVE_THUMBNAILS.get(key, time.monotonic())
        if not fresh or body is None:
            with self.locks.hold(key):
                fresh, body = _LIVE_THUMBNAILS.get(key, time.monotonic())  # made by whoever held the lock
                if not fresh or body is None:
                    def render() -> bytes:
                        with self._live_frames(source) as reader:
                            return media_images.render_thumbnail(reader, Fraction(0), params.resize,
                                                                 params.format).data

                    body = render() if self.guard is None else self.guard.render(self.client, render)
                    _LIVE_THUMBNAILS.put(key, body, time.monotonic() + LIVE_THUMBNAIL_SECONDS)
                    with _renders_lock:
                        RENDERS["thumbnail"] += 1
                    return ImageResult(body, MEDIA_TYPES[params.format], text_etag(body), key, True, False)
        return ImageResult(body, MEDIA_TYPES[params.format], text_etag(body), key, False, True)

    def _live_frames(self, source: ImageSource) -> FrameReader:
        """A reader over the newest segment (with its init segment) of the live top rung."""
        def under(base: str, uri: str) -> str:
            key = posixpath.normpath(posixpath.join(base, uri))
            if "://" in uri or uri.startswith("/") or not key.startswith(f"{source.storage_prefix}/"):
                raise NotFoundError(f"playback id {source.playback.playback_id}: a live playlist names {uri[:80]!r}")
            return key

        not_yet = AssetNotReadyError(f"the live stream of playback id {source.playback.playback_id} has no "
                                     "segment yet; retry in a moment")
        master = self._read(f"{source.storage_prefix}/{LIVE_MASTER}")
        variant = media_images.hls_top_variant(master.decode("utf-8", "replace")) if master is not None else None
        if variant is None:
            raise not_yet
        playlist_key = under(source.storage_prefix, variant)
        playlist = self._read(playlist_key)
        latest = media_images.hls_latest_segment(playlist.decode("utf-8", "replace")) if playlist else None
        if latest is None:
            raise not_yet
        folder = posixpath.dirname(playlist_key)
        init, segment = self._read(under(folder, latest.init)), self._read(under(folder, latest.segment))
        if init is None or segment is None:
            raise not_yet
        return FrameReader(io.BytesIO(init + segment))


#: Seconds a live stream's thumbnail is reused (in memory, per process) before a newer frame is decoded.
LIVE_THUMBNAIL_SECONDS = 2.0
#: The live stream's master playlist under its live prefix (:class:`kinoray.live.transcode.LiveTranscoder`).
LIVE_MASTER = "master.m3u8"
_LIVE_THUMBNAILS: TtlCache[str, bytes] = TtlCache(256)
