"""Manifests as a viewer gets them: the packaged HLS playlists and DASH MPD (``media/manifest.py``) re-rooted
under a URL prefix, with a query string (a playback token) carried on every URI, the video renditions
filtered and ordered by playback modifiers, and the asset's text tracks added (an HLS ``SUBTITLES`` group, DASH
text adaptation sets). Pure text/XML functions; the input is what our packager wrote.

Text tracks are added here, at delivery, rather than written into the stored manifests: the packager's output
stays as it made it, adding or deleting a track is a database change plus its own files (no manifest rewrite
to race with readers), and manifests are already generated per request (short-lived cache).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "SUBTITLE_GROUP",
    "PresentationTiming",
    "RenditionFilter",
    "TextRendition",
    "TimeWindow",
    "clip_span",
    "default_subtitle",
    "presentation_timing",
    "rewrite_dash_mpd",
    "rewrite_hls_master",
    "rewrite_hls_media",
    "retime_subtitle_playlist",
    "variant_short_sides",
]

#: ``GROUP-ID`` of the HLS subtitle renditions, named by every variant's ``SUBTITLES`` attribute.
SUBTITLE_GROUP = "subs"
#: Apple's characteristics for closed captions (HLS authoring spec): they transcribe dialog and describe sound.
_CC_CHARACTERISTICS = "public.accessibility.transcribes-spoken-dialog,public.accessibility.describes-music-and-sound"
_DASH_ROLE_SCHEME = "urn:mpeg:dash:role:2011"
#: A text Representation's nominal ``@bandwidth`` (mandatory in DASH): captions are a few hundred bit/s.
_TEXT_BANDWIDTH = 256
_ISO_DURATION = re.compile(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?")

_URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')
_RESOLUTION = re.compile(r"(?:^|,)RESOLUTION=(\d+)x(\d+)")
_BANDWIDTH = re.compile(r"(?:^|,)BANDWIDTH=(\d+)")
_STREAM_INF = "#EXT-X-STREAM-INF:"
_DASH_NS = "urn:mpeg:dash:schema:mpd:2011"


@dataclass(frozen=True)
class RenditionFilter:
    """Which video renditions a manifest lists, and in what order (Mux's playback modifiers).

    Sizes are the picture's short side in pixels (``720`` for ``720p``), so portrait video is judged like
    landscape. A rendition is kept when ``min_resolution <= short side <= max_resolution``; when none is, the
    one nearest the window is kept (a manifest never loses its video). The default order is ascending (the
    smallest rendition first, for a quick start); ``descending`` lists the largest first.
    """

    min_resolution: int | None = None
    max_resolution: int | None = None
    descending: bool = False

    def __post_init__(self) -> None:
        for name in ("min_resolution", "max_resolution"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if (self.min_resolution is not None and self.max_resolution is not None
                and self.min_resolution > self.max_resolution):
            raise ValueError(f"min_resolution {self.min_resolution}p is above max_resolution {self.max_resolution}p")

    def _distance(self, size: int) -> int:
        if self.min_resolution is not None and size < self.min_resolution:
            return self.min_resolution - size
        if self.max_resolution is not None and size > self.max_resolution:
            return size - self.max_resolution
        return 0

    def select(self, renditions: Sequence[tuple[int | None, int]]) -> list[int]:
        """Positions of the kept renditions, in delivery order, from ``(short side or None, bandwidth)`` pairs.
        Renditions without a size (an audio-only variant) are always kept, after the video ones."""
        sized = [(position, size, bandwidth) for position, (size, bandwidth) in enumerate(renditions)
                 if size is not None]
        unsized = [position for position, (size, _) in enumerate(renditions) if size is None]
        kept = [item for item in sized if self._distance(item[1]) == 0]
        if sized and not kept:
            nearest = min(sized, key=lambda item: (self._distance(item[1]), -item[1]))
            kept = [nearest]
        kept.sort(key=lambda item: (item[1], item[2]), reverse=self.descending)
        return [position for position, _, _ in kept] + unsized


@dataclass(frozen=True)
class TimeWindow:
    """Mux's instant clipping (``asset_start_time``/``asset_end_time``): seconds on the asset's timeline, either
    end open. Manifests are cut over the existing segment grid: every segment that overlaps ``[start, end)`` is
    kept, so a clip may begin up to one segment early and end up to one segment late (Mux's rule too)."""

    start: Fraction | None = None
    end: Fraction | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.start < 0:
            raise ValueError(f"asset_start_time must not be negative, got {float(self.start):g}")
        if self.end is not None and self.end <= 0:
            raise ValueError(f"asset_end_time must be positive, got {float(self.end):g}")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"asset_start_time {float(self.start):g} is not before asset_end_time "
                             f"{float(self.end):g}")

    def overlaps(self, begin: Fraction, finish: Fraction) -> bool:
        """Whether a segment shown from ``begin`` to ``finish`` (seconds) is kept."""
        return (self.end is None or begin < self.end) and (self.start is None or finish > self.start)

    @property
    def query(self) -> str:
        """The window as query parameters (``asset_start_time=..&asset_end_time=..``) for playlist URIs."""
        parts = [f"{name}={_decimal(value)}" for name, value in (("asset_start_time", self.start),
                                                                  ("asset_end_time", self.end)) if value is not None]
        return "&".join(parts)


def _decimal(value: Fraction) -> str:
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return text or "0"


def _with_query(query: str, extra: str) -> str:
    if not extra:
        return query
    return f"{query}&{extra}" if query else f"?{extra}"


def _cut_error(window: TimeWindow, total: Fraction) -> ValueError:
    return ValueError(f"asset_start_time {float(window.start or 0):g} s is past the asset's end "
                      f"({float(total):g} s): no segment to play")


@dataclass(frozen=True)
class TextRendition:
    """A text track as manifests list it. ``uri`` is its HLS subtitle playlist and ``vtt_uri`` its WebVTT file,
    both relative to the manifest's own directory (before the delivery prefix); ``name`` is unique among the
    asset's text tracks and ``language`` a BCP 47 tag (HLS ``NAME``/``LANGUAGE``; DASH ``Label``/``lang``)."""

    track_id: str
    name: str
    language: str
    closed_captions: bool = False
    uri: str = ""
    vtt_uri: str = ""

    def __post_init__(self) -> None:
        for field_name in ("name", "language", "uri", "vtt_uri"):
            value = getattr(self, field_name)
            if '"' in value or any(ord(char) < 0x20 for char in value):
                raise ValueError(f"{field_name} {value!r} cannot hold quotes or control characters")
        if not self.name or not self.language:
            raise ValueError("a text rendition needs a name and a language")


def _short_side(stream_inf: str) -> int | None:
    match = _RESOLUTION.search(stream_inf.removeprefix(_STREAM_INF))
    return min(int(match[1]), int(match[2])) if match else None


def _bandwidth(stream_inf: str) -> int:
    match = _BANDWIDTH.search(stream_inf.removeprefix(_STREAM_INF))
    return int(match[1]) if match else 0


def _uri_rewriter(prefix: str, query: str) -> Callable[[str], str]:
    def rewrite(uri: str) -> str:
        return f"{prefix}{uri}{query}"

    return rewrite


def _rewrite_tag_uri(line: str, rewrite: Callable[[str], str]) -> str:
    return _URI_ATTRIBUTE.sub(lambda match: f'URI="{rewrite(match[1])}"', line)


def _lines(text: str) -> list[str]:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "#EXTM3U":
        raise ValueError("not an HLS playlist (no #EXTM3U)")
    return lines


def variant_short_sides(master: str) -> list[int]:
    """The short side of every video variant of an HLS master playlist (``RESOLUTION``), in listed order."""
    return [size for line in _lines(master) if line.startswith(_STREAM_INF)
            for size in [_short_side(line)] if size is not None]


def _subtitle_media(track: TextRendition, rewrite: Callable[[str], str], *, default: bool = False) -> str:
    attributes = [f'TYPE=SUBTITLES,GROUP-ID="{SUBTITLE_GROUP}",NAME="{track.name}",LANGUAGE="{track.language}"',
                  f"DEFAULT={'YES' if default else 'NO'},AUTOSELECT=YES,FORCED=NO"]
    if track.closed_captions:
        attributes.append(f'CHARACTERISTICS="{_CC_CHARACTERISTICS}"')
    attributes.append(f'URI="{rewrite(track.uri)}"')
    return "#EXT-X-MEDIA:" + ",".join(attributes)


def default_subtitle(subtitles: Sequence[TextRendition], language: str | None) -> TextRendition | None:
    """The text track ``default_subtitles_lang`` makes the default: the first whose BCP 47 tag equals
    ``language`` (case-insensitively), else the first whose primary language subtag does (``en`` picks
    ``en-US``, ``en-US`` picks ``en``); ``None`` when no track matches."""
    if not language:
        return None
    wanted = language.lower()
    exact = next((track for track in subtitles if track.language.lower() == wanted), None)
    if exact is not None:
        return exact
    primary = wanted.split("-")[0]
    return next((track for track in subtitles if track.language.lower().split("-")[0] == primary), None)


def rewrite_hls_master(master: str, *, prefix: str, query: str = "",
                       selection: RenditionFilter | None = None, subtitles: Sequence[TextRendition] = (),
                       window: TimeWindow | None = None, default_subtitles_lang: str | None = None) -> str:
    """``master`` with every URI (variant lines and ``URI=`` attributes) turned into ``prefix + uri + query``
    and its variants filtered and ordered by ``selection``. Tags that are not variants (``EXT-X-MEDIA`` audio
    groups, the header) keep their place; variants follow them. Each of ``subtitles`` becomes an
    ``EXT-X-MEDIA:TYPE=SUBTITLES`` rendition of group :data:`SUBTITLE_GROUP` (closed captions carry Apple's
    accessibility ``CHARACTERISTICS``), and every variant names that group; the one
    :func:`default_subtitle` picks for ``default_subtitles_lang`` is ``DEFAULT=YES``, the others ``NO``.
    ``window`` (instant clipping) is carried on every playlist URI as query parameters, so the media
    playlists a player fetches next are cut the same way."""
    rewrite = _uri_rewriter(prefix, _with_query(query, window.query if window else ""))
    head: list[str] = []
    variants: list[tuple[str, str]] = []  # (EXT-X-STREAM-INF line, URI line)
    lines = _lines(master)
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith(_STREAM_INF):
            uri_index = index + 1
            while uri_index < len(lines) and (not lines[uri_index].strip() or lines[uri_index].startswith("#")):
                uri_index += 1  # tolerate comments between the tag and its URI
            if uri_index == len(lines):
                raise ValueError("EXT-X-STREAM-INF without a URI")
            variants.append((line, lines[uri_index].strip()))
            index = uri_index + 1
            continue
        if line.strip():
            head.append(_rewrite_tag_uri(line, rewrite) if line.startswith("#") else rewrite(line.strip()))
        index += 1
    order = (selection or RenditionFilter()).select([(_short_side(tag), _bandwidth(tag)) for tag, _ in variants])
    if subtitles:
        chosen = default_subtitle(subtitles, default_subtitles_lang)
        head += [_subtitle_media(track, rewrite, default=track is chosen) for track in subtitles]
        variants = [(f'{tag},SUBTITLES="{SUBTITLE_GROUP}"', uri) for tag, uri in variants]
    body = [part for position in order for part in (variants[position][0], rewrite(variants[position][1]))]
    return "\n".join(head + body) + "\n"


def _kept_segments(lines: list[str], window: TimeWindow) -> tuple[list[bool], int, Fraction]:
    """Which of a media playlist's ``lines`` stay when cut to ``window`` (a segment's ``#EXTINF`` and URI go
    together), the number of the first segment kept, and the kept segments' total duration.

    Raises:
        ValueError: ``window`` starts past the last segment.
    """
    keep = [True] * len(lines)
    first_kept: int | None = None
    elapsed = span = Fraction(0)
    number, pending_extinf = 0, None
    for position, line in enumerate(lines):
        if line.startswith("#EXTINF:"):
            pending_extinf = position
        elif not line.startswith("#") and pending_extinf is not None:
            duration = Fraction(lines[pending_extinf][len("#EXTINF:"):].split(",")[0].strip())
            kept = window.overlaps(elapsed, elapsed + duration)
            keep[pending_extinf] = keep[position] = kept
            if kept:
                span += duration
                first_kept = number if first_kept is None else first_kept
            elapsed, number, pending_extinf = elapsed + duration, number + 1, None
    if first_kept is None:
        raise _cut_error(window, elapsed)
    return keep, first_kept, span


def rewrite_hls_media(playlist: str, *, prefix: str = "", query: str = "", window: TimeWindow | None = None) -> str:
    """A media playlist with each segment URI and ``EXT-X-MAP`` turned into ``prefix + uri + query``; with
    ``window``, only the segments overlapping it are listed (``EXT-X-MEDIA-SEQUENCE`` names the first kept).

    Raises:
        ValueError: not a playlist, or ``window`` starts past the last segment.
    """
    rewrite = _uri_rewriter(prefix, query)
    lines = [line for line in _lines(playlist) if line.strip()]
    keep, first_kept = [True] * len(lines), None
    if window is not None:
        keep, first_kept, _ = _kept_segments(lines, window)
    out = []
    for line, kept in zip(lines, keep, strict=True):
        if not kept:
            continue
        if first_kept is not None and line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            line = f"#EXT-X-MEDIA-SEQUENCE:{int(line.split(':', 1)[1]) + first_kept}"
        out.append(_rewrite_tag_uri(line, rewrite) if line.startswith("#") else rewrite(line.strip()))
    return "\n".join(out) + "\n"


def clip_span(media_playlist: str, window: TimeWindow) -> Fraction:
    """The seconds an instant clip plays: the total duration of ``media_playlist``'s segments that overlap
    ``window`` (every rendition shares the segment grid, so any one of them tells).

    Raises:
        ValueError: not a playlist, or ``window`` starts past the last segment.
    """
    return _kept_segments([line for line in _lines(media_playlist) if line.strip()], window)[2]


def retime_subtitle_playlist(playlist: str, span: Fraction) -> str:
    """A one-cue-file subtitle playlist (``media/captions.hls_subtitle_playlist``) listed for ``span`` seconds,
    an instant clip's length. The cue file stays whole: players place cues by the WebVTT's
    ``X-TIMESTAMP-MAP`` against the clip's first media timestamp, so cues before the clip fall before 0."""
    target = max(1, -(-span // 1))
    out = []
    for line in _lines(playlist):
        if line.startswith("#EXTINF:"):
            line = f"#EXTINF:{float(span):.6f},"
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            line = f"#EXT-X-TARGETDURATION:{target}"
        out.append(line)
    return "\n".join(line for line in out if line.strip()) + "\n"


def _dash(tag: str) -> str:
    return f"{{{_DASH_NS}}}{tag}"


def _parse_mpd(mpd: str) -> ET.Element:
    ET.register_namespace("", _DASH_NS)
    root = ET.fromstring(mpd)
    if root.tag != _dash("MPD"):
        raise ValueError("not a DASH MPD")
    return root


def _text_adaptation(period: ET.Element, set_id: int, track: TextRendition, rewrite: Callable[[str], str]) -> None:
    adaptation = ET.SubElement(period, _dash("AdaptationSet"), {
        "id": str(set_id), "contentType": "text", "mimeType": "text/vtt", "lang": track.language})
    ET.SubElement(adaptation, _dash("Label")).text = track.name
    ET.SubElement(adaptation, _dash("Role"), {
        "schemeIdUri": _DASH_ROLE_SCHEME, "value": "caption" if track.closed_captions else "subtitle"})
    representation = ET.SubElement(adaptation, _dash("Representation"), {
        "id": f"text-{track.track_id}", "bandwidth": str(_TEXT_BANDWIDTH)})
    ET.SubElement(representation, _dash("BaseURL")).text = rewrite(track.vtt_uri)


def _cut_timeline(template: ET.Element, window: TimeWindow) -> Fraction:
    """Keep the ``S`` entries of ``template``'s timeline that overlap ``window`` (times from the timeline's first
    ``t``): one ``S`` each, ``startNumber`` and ``presentationTimeOffset`` moved to the first kept segment.
    Returns the kept span in seconds."""
    timeline = template.find(_dash("SegmentTimeline"))
    if timeline is None:
        raise ValueError("a SegmentTemplate without a SegmentTimeline cannot be cut")
    timescale = int(template.get("timescale") or 1)
    segments: list[tuple[int, int]] = []  # (t, d)
    cursor = 0
    for entry in timeline.findall(_dash("S")):
        cursor = int(entry.get("t", cursor))
        duration = int(entry.get("d") or 0)
        for _ in range(int(entry.get("r") or 0) + 1):
            segments.append((cursor, duration))
            cursor += duration
    if not segments:
        raise ValueError("an empty SegmentTimeline")
    origin = segments[0][0]
    kept = [(position, t, d) for position, (t, d) in enumerate(segments)
            if window.overlaps(Fraction(t - origin, timescale), Fraction(t - origin + d, timescale))]
    if not kept:
        raise _cut_error(window, Fraction(cursor - origin, timescale))
    for entry in list(timeline):
        timeline.remove(entry)
    for _, t, d in kept:
        ET.SubElement(timeline, _dash("S"), {"t": str(t), "d": str(d)})
    template.set("startNumber", str(int(template.get("startNumber") or 1) + kept[0][0]))
    template.set("presentationTimeOffset", str(kept[0][1]))
    return Fraction(kept[-1][1] + kept[-1][2] - kept[0][1], timescale)


def rewrite_dash_mpd(mpd: str, *, prefix: str, query: str = "", selection: RenditionFilter | None = None,
                     subtitles: Sequence[TextRendition] = (), window: TimeWindow | None = None) -> str:
    """``mpd`` with every ``SegmentTemplate``'s ``initialization`` and ``media`` turned into
    ``prefix + template + query`` and the video ``Representation``s filtered and ordered by ``selection``
    (``maxWidth``/``maxHeight`` follow). Each of ``subtitles`` becomes a text ``AdaptationSet``
    (``text/vtt``, ``lang``, a ``Label``, ``Role`` ``subtitle`` or ``caption``) whose one ``Representation``
    names the whole WebVTT file in its ``BaseURL`` (DASH-IF IOP's side-loaded text). With ``window``, every
    segment timeline keeps the segments overlapping it (:func:`_cut_timeline`) and ``mediaPresentationDuration``
    becomes the longest kept span; side-loaded text is not cut."""
    root = _parse_mpd(mpd)
    rewrite = _uri_rewriter(prefix, query)
    if window is not None:
        spans: dict[str, list[Fraction]] = {}
        for adaptation in root.iter(_dash("AdaptationSet")):
            for template in adaptation.iter(_dash("SegmentTemplate")):
                spans.setdefault(adaptation.get("contentType") or "", []).append(_cut_timeline(template, window))
        presented = spans.get("video") or spans.get("audio")
        if presented:  # the video's span: the packager's duration is the video's (audio frames overhang a little)
            root.set("mediaPresentationDuration", f"PT{float(max(presented)):.3f}S")
    for template in list(root.iter(_dash("SegmentTemplate"))):
        for attribute in ("initialization", "media"):
            value = template.get(attribute)
            if value is not None:
                template.set(attribute, rewrite(value))
    for adaptation in list(root.iter(_dash("AdaptationSet"))):
        if adaptation.get("contentType") != "video":
            continue
        representations = adaptation.findall(_dash("Representation"))
        sizes = []
        for representation in representations:
            width, height = representation.get("width"), representation.get("height")
            size = min(int(width), int(height)) if width and height else None
            sizes.append((size, int(representation.get("bandwidth") or 0)))
        order = (selection or RenditionFilter()).select(sizes)
        for representation in representations:
            adaptation.remove(representation)
        kept = [representations[position] for position in order]
        adaptation.extend(kept)
        for attribute, dimension in (("maxWidth", "width"), ("maxHeight", "height")):
            values = [int(value) for value in (r.get(dimension) for r in kept) if value]
            if values and adaptation.get(attribute) is not None:
                adaptation.set(attribute, str(max(values)))
    period = root.find(_dash("Period"))
    if subtitles and period is not None:
        taken = [int(value) for value in (a.get("id") for a in root.iter(_dash("AdaptationSet"))) if value
                 and value.isdigit()]
        first_id = max(taken, default=-1) + 1
        for offset, track in enumerate(subtitles):
            _text_adaptation(period, first_id + offset, track, rewrite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


@dataclass(frozen=True)
class PresentationTiming:
    """Where a packaged presentation's timeline starts (the earliest media time of its first segment, in seconds
    of the track's media timeline, i.e. ``tfdt / timescale``) and how long it lasts."""

    start: Fraction
    duration: Fraction


def presentation_timing(mpd: str) -> PresentationTiming:
    """The timing of a packaged MPD: ``start`` from the first video ``Representation``'s first ``S@t`` over its
    ``SegmentTemplate@timescale`` (audio's when there is no video), ``duration`` from
    ``mediaPresentationDuration``. Caption cue time 0 is then media time ``start`` (HLS ``X-TIMESTAMP-MAP``).

    Raises:
        ValueError: not an MPD, or without a duration or a segment timeline.
    """
    root = _parse_mpd(mpd)
    match = _ISO_DURATION.fullmatch(root.get("mediaPresentationDuration") or "")
    if match is None or not any(match.groups()):
        raise ValueError("the MPD has no mediaPresentationDuration")
    hours, minutes, seconds = match.groups()
    duration = Fraction(int(hours or 0) * 3600 + int(minutes or 0) * 60) + Fraction(seconds or "0")
    adaptations = list(root.iter(_dash("AdaptationSet")))
    ordered = ([a for a in adaptations if a.get("contentType") == "video"]
               + [a for a in adaptations if a.get("contentType") == "audio"])
    for adaptation in ordered:
        template = adaptation.find(f"{_dash('Representation')}/{_dash('SegmentTemplate')}")
        first = None if template is None else template.find(f"{_dash('SegmentTimeline')}/{_dash('S')}")
        if template is not None and first is not None:
            timescale = int(template.get("timescale") or 1)
            return PresentationTiming(start=Fraction(int(first.get("t") or 0), timescale), duration=duration)
    raise ValueError("the MPD has no segment timeline")
