"""Caption files: SubRip (SRT) and WebVTT parsed into typed cues, validated, and written back as one normalized
WebVTT; the HLS subtitle playlist that serves it. Pure text functions: no I/O, no HTTP.

What normalization means here:

- bytes: UTF-8 (a BOM is dropped) or UTF-16 with a BOM; anything else, NUL bytes and control characters are
  refused (a binary file sent by mistake fails here, with the offset);
- line endings: CRLF and CR become LF;
- times: ``HH:MM:SS.mmm`` in integer milliseconds (``,`` or ``.`` accepted before the milliseconds, hours
  optional); cue start times never decrease, every cue ends after it starts and before ``max_cue_ms``;
- SRT text: ``<b>``, ``<i>``, ``<u>`` kept (WebVTT has them), ``<font>`` and ASS ``{\\...}`` overrides dropped
  (``{\\an7}``-``{\\an9}`` become ``line:0``: a cue at the top), ``&``, ``<``, ``>`` escaped; cue numbers
  dropped (WebVTT identifiers must be unique, SRT numbers often are not);
- WebVTT: identifiers (the first of each), cue settings WebVTT defines, ``STYLE`` and ``REGION`` blocks before
  the first cue and cue text markup are kept; ``NOTE`` blocks and header lines are dropped.

Every refusal is an :class:`~kinoray.errors.InvalidMediaError` whose message names the line and says what to fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from kinoray.errors import InvalidMediaError

__all__ = [
    "MAX_CAPTION_BYTES",
    "Captions",
    "Cue",
    "decode_caption_text",
    "format_timestamp",
    "hls_subtitle_playlist",
    "parse_captions",
    "parse_srt",
    "parse_webvtt",
    "write_webvtt",
]

#: Largest caption file accepted (2 MiB: a feature film's subtitles are 50-150 KB).
MAX_CAPTION_BYTES = 2 * 1024 * 1024
#: Default bound on cue times: 12 hours, kinoray's longest input (``limits.max_duration_seconds``).
DEFAULT_MAX_CUE_MS = 12 * 3600 * 1000
#: 90 kHz ticks wrap at 2**33 (MPEG-2 TS clock), the unit of ``X-TIMESTAMP-MAP``'s ``MPEGTS``.
_MPEGTS_WRAP = 2**33

CaptionFormat = Literal["srt", "vtt"]

_TIMESTAMP = re.compile(r"(?:(\d{1,3}):)?(\d{1,2}):(\d{1,2})[.,](\d{3})")
_ARROW = "-->"
#: An SRT timing line starts with a time (even a malformed one); "-->" elsewhere in SRT text is text.
_SRT_TIMING = re.compile(r"\s*[0-9]\S*\s*-->")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CUE_SETTING = re.compile(r"(?:vertical|line|position|size|align|region):\S+")
_SRT_TAG = re.compile(r"<\s*(/?)\s*([biu])\s*>|<\s*/?\s*font\b[^>]*>|\{\\[^}]*\}", re.IGNORECASE)
_ASS_TOP = re.compile(r"\{\\an[789]\}")


@dataclass(frozen=True)
class Cue:
    """One cue. ``text`` is WebVTT cue text (markup as WebVTT defines it, lines joined by ``\\n``, never a blank
    line or ``-->``); ``line`` is where the cue's timing line is in the source file, for messages."""

    start_ms: int
    end_ms: int
    text: str
    identifier: str = ""
    settings: str = ""
    line: int = 0

    def __post_init__(self) -> None:
        if self.start_ms < 0:
            raise ValueError(f"cue start {self.start_ms} ms is negative")
        if self.end_ms <= self.start_ms:
            raise ValueError(f"cue ends ({self.end_ms} ms) before it starts ({self.start_ms} ms)")
        if _ARROW in self.text or _ARROW in self.identifier or "\n" in self.identifier:
            raise ValueError("cue text and identifier cannot contain '-->'; identifiers are one line")
        if any(not part.strip(" \t") for part in self.text.split("\n")):
            raise ValueError("cue text cannot contain blank lines")


@dataclass(frozen=True)
class Captions:
    """A parsed caption file: cues in start order and, for WebVTT input, its ``STYLE``/``REGION`` blocks."""

    source_format: CaptionFormat
    cues: tuple[Cue, ...]
    blocks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.cues:
            raise ValueError("captions need at least one cue")
        for previous, cue in zip(self.cues, self.cues[1:], strict=False):
            if cue.start_ms < previous.start_ms:
                raise ValueError(f"cue at {cue.start_ms} ms starts before the previous one ({previous.start_ms} ms)")

    @property
    def end_ms(self) -> int:
        """When the last cue ends."""
        return max(cue.end_ms for cue in self.cues)


def _fail(line: int, message: str) -> InvalidMediaError:
    return InvalidMediaError(f"line {line}: {message}" if line else message)


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def decode_caption_text(data: bytes, *, max_bytes: int = MAX_CAPTION_BYTES) -> str:
    """``data`` as text with LF line endings: UTF-8 (BOM dropped) or UTF-16 with a BOM.

    Raises:
        InvalidMediaError: empty, larger than ``max_bytes``, not UTF-8/UTF-16 text, or binary (NUL or other
            control characters), with the byte offset or line.
    """
    if not data.strip():
        raise InvalidMediaError("the caption file is empty")
    if len(data) > max_bytes:
        raise InvalidMediaError(f"the caption file is {len(data)} bytes; the limit is {max_bytes} bytes")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding, body = ("utf-16-le" if data[:2] == b"\xff\xfe" else "utf-16-be"), data[2:]
    else:
        encoding, body = "utf-8", data.removeprefix(b"\xef\xbb\xbf")
        nul = body.find(b"\x00")
        if nul >= 0:
            raise InvalidMediaError(f"the caption file is binary (a NUL byte at offset {nul}), not SRT or WebVTT text")
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as error:
        line = body[:error.start].count(b"\n") + 1
        raise _fail(line, f"the caption file is not valid {encoding.upper()} text (byte 0x{body[error.start]:02X} "
                          f"at offset {error.start}); save it as UTF-8") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    control = _CONTROL.search(text)
    if control is not None:
        line = text.count("\n", 0, control.start()) + 1
        raise _fail(line, f"control character U+{ord(control.group()):04X}: the caption file looks binary, "
                          "not SRT or WebVTT text")
    return text


def parse_captions(data: bytes, *, max_bytes: int = MAX_CAPTION_BYTES,
                   max_cue_ms: int = DEFAULT_MAX_CUE_MS) -> Captions:
    """Parse an SRT or WebVTT file (told apart by WebVTT's ``WEBVTT`` signature).

    Raises:
        InvalidMediaError: see :func:`decode_caption_text`, :func:`parse_srt`, :func:`parse_webvtt`.
    """
    text = decode_caption_text(data, max_bytes=max_bytes)
    if text.startswith("WEBVTT"):
        return parse_webvtt(text, max_cue_ms=max_cue_ms)
    first = next((line for line in text.split("\n") if line.strip()), "")
    if first.strip().upper().startswith("WEBVTT"):
        raise _fail(text.split("\n").index(first) + 1, "a WebVTT file must start with 'WEBVTT' (upper case), on its first line")
    if _ARROW not in text:
        raise InvalidMediaError(f"not an SRT or WebVTT file: no cue timing line ('00:00:01,000 --> 00:00:02,000') "
                                f"found; the file starts with {_quote(first)}")
    return parse_srt(text, max_cue_ms=max_cue_ms)


def _timestamp(value: str, line: int) -> int:
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        raise _fail(line, f"bad timestamp {_quote(value, 32)}: expected HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (WebVTT)")
    hours, minutes, seconds, millis = (int(part) if part else 0 for part in match.groups())
    if minutes > 59 or seconds > 59:
        raise _fail(line, f"bad timestamp {_quote(value, 32)}: minutes and seconds must be 00-59")
    return ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis


def _timing(text: str, line: int) -> tuple[int, int, str]:
    """``(start ms, end ms, what follows the end time)`` of a ``start --> end [settings]`` line."""
    start, _, rest = text.partition(_ARROW)
    end, *after = rest.split() or [""]
    start_ms, end_ms = _timestamp(start.strip(" \t"), line), _timestamp(end, line)
    if end_ms <= start_ms:
        raise _fail(line, f"the cue ends ({end}) before it starts ({start.strip()}), or lasts no time")
    return start_ms, end_ms, " ".join(after)


def _blocks(lines: list[str], first: int = 0) -> Iterator[list[tuple[int, str]]]:
    """Runs of non-blank lines as ``(line number, text)``; a line of only spaces/tabs counts as blank."""
    block: list[tuple[int, str]] = []
    for number, text in enumerate(lines[first:], start=first + 1):
        if text.strip(" \t"):
            block.append((number, text))
        elif block:
            yield block
            block = []
    if block:
        yield block


def _check_order(cues: list[Cue], max_cue_ms: int) -> None:
    for previous, cue in zip(cues, cues[1:], strict=False):
        if cue.start_ms < previous.start_ms:
            raise _fail(cue.line, f"this cue starts at {format_timestamp(cue.start_ms)}, before the cue at line "
                                  f"{previous.line} ({format_timestamp(previous.start_ms)}): cues must be in time order")
    for cue in cues:
        if cue.end_ms > max_cue_ms:
            raise _fail(cue.line, f"cue time {format_timestamp(cue.end_ms)} is beyond the "
                                  f"{format_timestamp(max_cue_ms)} limit")


def _srt_text(lines: list[str]) -> tuple[str, str]:
    """SRT cue text as WebVTT cue text, and the cue settings its ASS position tag asks for."""
    settings = "line:0" if any(_ASS_TOP.search(line) for line in lines) else ""
    out = []
    for raw in lines:
        pieces, position = [], 0
        for match in _SRT_TAG.finditer(raw):
            pieces.append(_escape(raw[position:match.start()]))
            if match.group(2):  # <b>, </i>, ...: WebVTT has the same tags
                pieces.append(f"<{match.group(1)}{match.group(2).lower()}>")
            position = match.end()
        pieces.append(_escape(raw[position:]))
        text = "".join(pieces).strip(" \t")
        if text:
            out.append(text)
    return "\n".join(out), settings


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def parse_srt(text: str, *, max_cue_ms: int = DEFAULT_MAX_CUE_MS) -> Captions:
    """Parse SubRip text (LF line endings, as :func:`decode_caption_text` returns). Each block is an optional
    cue number, a ``start --> end`` line (SRT's ``X1:`` coordinates after it are ignored) and text lines; a
    timing line right after text (a missing blank line) starts a new cue. Cues without text are dropped.

    Raises:
        InvalidMediaError: a block without a timing line, a bad timestamp, a cue ending before it starts, cues
            out of time order, times past ``max_cue_ms``, or no cue at all.
    """
    cues: list[Cue] = []
    for block in _blocks(text.split("\n")):
        position = 0
        while position < len(block):
            number, line = block[position]
            if not _SRT_TIMING.match(line):
                following = block[position + 1][1] if position + 1 < len(block) else ""
                if line.strip().isdigit() and _SRT_TIMING.match(following):
                    position += 1  # the cue number
                    continue
                raise _fail(number, f"expected a cue number or a timing line ('00:00:01,000 --> 00:00:02,000'), "
                                    f"found {_quote(line)}; a blank line inside a cue's text ends the cue")
            start_ms, end_ms, _ = _timing(line, number)
            body_end = position + 1
            while body_end < len(block) and not _SRT_TIMING.match(block[body_end][1]):
                body_end += 1
            body = [text for _, text in block[position + 1:body_end]]
            if body_end < len(block) and body and body[-1].strip().isdigit():
                body.pop()  # the next cue's number, after a missing blank line
            cue_text, settings = _srt_text(body)
            if cue_text:
                cues.append(Cue(start_ms, end_ms, cue_text, settings=settings, line=number))
            position = body_end
    if not cues:
        raise InvalidMediaError("the SRT file has no cue with text")
    _check_order(cues, max_cue_ms)
    return Captions("srt", tuple(cues))


def _cue_settings(text: str) -> str:
    return " ".join(token for token in text.split() if _CUE_SETTING.fullmatch(token))


def parse_webvtt(text: str, *, max_cue_ms: int = DEFAULT_MAX_CUE_MS) -> Captions:
    """Parse WebVTT text (LF line endings). The first line is ``WEBVTT``, alone or followed by a space or tab
    and text; header lines up to the first blank line are skipped. ``NOTE`` blocks are dropped, ``STYLE`` and
    ``REGION`` blocks before the first cue kept. A cue block is an optional identifier, a timing line with
    optional settings (unknown ones are dropped) and text; a timing line inside a cue's text starts a new cue
    (WebVTT's rule).

    Raises:
        InvalidMediaError: a bad signature, a block that is neither a cue nor a comment/style/region, a bad
            timestamp, a cue ending before it starts, cues out of time order, times past ``max_cue_ms``, or no
            cue at all.
    """
    lines = text.split("\n")
    signature = lines[0]
    if signature != "WEBVTT" and not signature.startswith(("WEBVTT ", "WEBVTT\t")):
        raise _fail(1, f"a WebVTT file starts with 'WEBVTT' alone on its line, found {_quote(signature)}")
    header_end = 1
    while header_end < len(lines) and lines[header_end].strip(" \t"):
        if _ARROW in lines[header_end]:
            raise _fail(header_end + 1, "a blank line must separate the 'WEBVTT' header from the first cue")
        header_end += 1
    cues: list[Cue] = []
    blocks: list[str] = []
    identifiers: set[str] = set()
    for block in _blocks(lines, header_end):
        number, first = block[0]
        keyword = first.strip(" \t")
        arrows = [position for position, (_, line) in enumerate(block) if _ARROW in line]
        if not arrows:
            if keyword == "NOTE" or first.startswith(("NOTE ", "NOTE\t")):
                continue
            if keyword in ("STYLE", "REGION"):
                if not cues:  # after the first cue WebVTT ignores them
                    blocks.append("\n".join(line for _, line in block))
                continue
            raise _fail(number, f"expected a cue timing line ('00:00:01.000 --> 00:00:02.000'), found "
                                f"{_quote(first)}; a blank line inside a cue's text ends the cue")
        if arrows[0] > 1:
            raise _fail(block[arrows[0]][0], f"a cue timing line must be the first or second line of its block, "
                                             f"found text before it: {_quote(first)}")
        identifier = block[0][1].strip(" \t") if arrows[0] == 1 else ""
        for index, position in enumerate(arrows):
            number, line = block[position]
            start_ms, end_ms, settings = _timing(line, number)
            end = arrows[index + 1] if index + 1 < len(arrows) else len(block)
            cue_text = "\n".join(line for _, line in block[position + 1:end])
            if identifier in identifiers:
                identifier = ""
            identifiers.add(identifier)
            if cue_text.strip(" \t"):
                cues.append(Cue(start_ms, end_ms, cue_text, identifier=identifier,
                                settings=_cue_settings(settings), line=number))
            identifier = ""
    if not cues:
        raise InvalidMediaError("the WebVTT file has no cue with text")
    _check_order(cues, max_cue_ms)
    return Captions("vtt", tuple(cues), tuple(blocks))


def format_timestamp(milliseconds: int) -> str:
    """``HH:MM:SS.mmm`` (WebVTT; hours grow past 99 if they must)."""
    seconds, millis = divmod(milliseconds, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def write_webvtt(captions: Captions, *, mpegts: int | None = None) -> str:
    """``captions`` as a WebVTT file. With ``mpegts`` (90 kHz ticks), the header carries HLS's
    ``X-TIMESTAMP-MAP=MPEGTS:<mpegts>,LOCAL:00:00:00.000``: cue time 0 is the media timestamp ``mpegts``, i.e.
    the presentation start of the stream the captions go with (see RFC 8216 §3.5). Players that do not know
    the header (dash.js, browsers' ``<track>``) skip it as a header line."""
    header = "WEBVTT"
    if mpegts is not None:
        header += f"\nX-TIMESTAMP-MAP=MPEGTS:{mpegts % _MPEGTS_WRAP},LOCAL:00:00:00.000"
    parts = [header, *captions.blocks]
    for cue in captions.cues:
        timing = f"{format_timestamp(cue.start_ms)} --> {format_timestamp(cue.end_ms)}"
        if cue.settings:
            timing += f" {cue.settings}"
        parts.append("\n".join(part for part in (cue.identifier, timing, cue.text) if part))
    return "\n\n".join(parts) + "\n"


def hls_subtitle_playlist(vtt_uri: str, duration: Fraction) -> str:
    """A VOD subtitle media playlist with one WebVTT segment, ``vtt_uri``, covering ``duration`` seconds (the
    whole presentation: players map cues by their times, not by the segment's)."""
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    target = max(1, math.ceil(duration - Fraction(1, 1000)))
    return "\n".join([
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        f"#EXTINF:{float(duration):.6f},",
        vtt_uri,
        "#EXT-X-ENDLIST",
    ]) + "\n"
