"""The ABR ladder: which renditions an asset gets, at what size and bitrate cap.

Rungs are named by the short side of the picture ("720p" is 1280x720 landscape or 720x1280 portrait). A
ladder never upscales: the top rendition is the source's display size (after rotation and sample aspect)
when the source is smaller than the largest requested rung, and rungs above the source are dropped.
Dimensions are even (4:2:0 chroma) and keep the display aspect ratio.

Tiny sources: probe refuses pictures below ``limits.min_dimension`` (16 px by default), and no rung is ever
smaller than :data:`MIN_RUNG` (10 px short side, the smallest name, ``10p``, the stream router serves): a
requested rung below it is raised to it (or to the source's own size when that is smaller), and a ladder
whose names the router could not serve is refused with :class:`~kinoray.errors.UnsupportedMediaError` rather
than published with a master playlist pointing at renditions that 404.

Rate control is capped CRF ("capped VBR"): constant quality, with ``maxrate``/``bufsize`` bounding the peak,
so chunked and unchunked encodes of the same rung agree and easy content does not waste bits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from kinoray.errors import UnsupportedMediaError
from kinoray.media.probe import VideoStreamInfo

__all__ = ["CODEC_BITRATE_FACTOR", "DEFAULT_LADDER", "MIN_RUNG", "RUNG_NAME", "Rendition", "build_ladder",
           "ladder_for_size"]

#: Smallest short side a rendition may have: ``10p`` is the smallest name the stream router serves.
MIN_RUNG = 10
#: Rendition names the stream router serves (``kinoray.control.playback.RUNG_PATTERN`` matches the same).
RUNG_NAME = re.compile(r"[1-9][0-9]{1,3}p")

#: (short side, H.264 max bitrate in bits/s)
DEFAULT_LADDER: tuple[tuple[int, int], ...] = (
    (1080, 5_000_000),
    (720, 3_000_000),
    (480, 1_400_000),
    (360, 800_000),
    (240, 400_000),
)

#: HEVC and AV1 reach the same quality with fewer bits; their caps scale by these factors.
CODEC_BITRATE_FACTOR = {"h264": Fraction(1), "hevc": Fraction(7, 10), "av1": Fraction(6, 10)}


@dataclass(frozen=True)
class Rendition:
    name: str  # "720p"
    width: int
    height: int
    max_bitrate: int  # bits/s; VBV maxrate
    buffer_size: int  # bits; VBV bufsize (2 s of maxrate)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError(f"rendition {self.name}: dimensions must be positive and even, got {self.width}x{self.height}")
        if self.max_bitrate <= 0:
            raise ValueError(f"rendition {self.name}: bitrate must be positive")

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)


def _even(value: float | Fraction) -> int:
    return max(2, int(round(value / 2)) * 2)


def _interpolated_bitrate(short_side: int) -> int:
    """Bitrate for a non-standard size: scale the nearest standard rung by pixels^0.75."""
    reference_short, reference_rate = min(DEFAULT_LADDER, key=lambda rung: abs(rung[0] - short_side))
    ratio = (short_side / reference_short) ** 2
    return max(100_000, int(reference_rate * ratio**0.75))


def build_ladder(
    video: VideoStreamInfo,
    heights: tuple[int, ...] | None = None,
    codec: str = "h264",
) -> tuple[Rendition, ...]:
    """Renditions for ``video``, largest first. ``heights`` selects rungs by short side (default: all)."""
    return ladder_for_size(video.display_width, video.display_height, heights, codec)


def ladder_for_size(
    display_w: int,
    display_h: int,
    heights: tuple[int, ...] | None = None,
    codec: str = "h264",
) -> tuple[Rendition, ...]:
    """Renditions for a picture of ``display_w`` x ``display_h`` as displayed (what :func:`build_ladder` does
    for a probed file; a live source knows only its size)."""
    portrait = display_h > display_w
    source_short = min(display_w, display_h)
    if source_short < MIN_RUNG:
        raise UnsupportedMediaError(
            f"video is {display_w}x{display_h} as displayed; renditions need at least {MIN_RUNG} px on a side")
    floor = min(MIN_RUNG + MIN_RUNG % 2, source_short)
    wanted = sorted({max(h, floor) for h in (heights or tuple(h for h, _ in DEFAULT_LADDER))}, reverse=True)
    rates = dict(DEFAULT_LADDER)
    factor = CODEC_BITRATE_FACTOR.get(codec, Fraction(1))
    aspect = Fraction(max(display_w, display_h), source_short)

    native = source_short - (source_short % 2)
    shorts = [short for short in wanted if short <= source_short]
    if not shorts or (wanted[0] > native and native >= shorts[0] * 1.2):
        # The source sits between rungs (or below all): its own size becomes the top rendition.
        shorts.insert(0, native)
    long_limit = max(display_w, display_h)
    renditions: list[Rendition] = []
    for short in shorts:
        short_even = short - (short % 2)
        if any(r.short_side == short_even for r in renditions):
            continue  # an odd request and its even neighbour name the same rung
        long_side = min(_even(short_even * aspect), long_limit - long_limit % 2)
        width, height = (short_even, long_side) if portrait else (long_side, short_even)
        base_rate = rates.get(short) or _interpolated_bitrate(short_even)
        max_bitrate = int(base_rate * factor)
        renditions.append(Rendition(f"{short_even}p", width, height, max_bitrate, 2 * max_bitrate))
    unservable = [r.name for r in renditions if not RUNG_NAME.fullmatch(r.name)]
    if unservable:
        raise UnsupportedMediaError(f"renditions {', '.join(unservable)} cannot be served (names run 10p to 9999p)")
    return tuple(renditions)
