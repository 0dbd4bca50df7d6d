"""Mux Data's short beacon keys, expanded to field names.

The SDK (``mux-embed``) shortens every field name before it sends it: the first ``_``-separated word becomes one
letter (:data:`FIRST_WORDS`), every later word two letters (:data:`LATER_WORDS`), a word that is an integer stays
as its digits (``custom_1`` → ``c1``), and a word the SDK has no abbreviation for is written ``_word_`` (a first
word: ``word_``). So ``player_playhead_time`` travels as ``pphti``, ``view_sequence_number`` as ``xsqno``. Reading
a key back is unambiguous left to right: one letter, then two-letter groups, digit runs and ``_word_`` runs.

The tables are the facts of the published ``mux-embed`` package (5.19), written out here; a key that does not
parse with them (a newer SDK's word) is kept as it was sent rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

__all__ = ["FIRST_WORDS", "LATER_WORDS", "expand_event", "expand_key"]

#: The first word of a field name, one letter.
FIRST_WORDS: Mapping[str, str] = {
    "a": "env", "b": "beacon", "c": "custom", "d": "ad", "e": "event", "f": "experiment", "i": "internal",
    "m": "mux", "n": "response", "p": "player", "q": "request", "r": "retry", "s": "session", "t": "timestamp",
    "u": "viewer", "v": "video", "w": "page", "x": "view", "y": "sub",
}

#: Every later word of a field name, two letters.
LATER_WORDS: Mapping[str, str] = {
    "ad": "ad", "af": "affiliate", "ag": "aggregate", "ap": "api", "al": "application", "ao": "audio",
    "ar": "architecture", "as": "asset", "au": "autoplay", "av": "average", "bi": "bitrate", "bn": "brand",
    "br": "break", "bw": "browser", "by": "bytes", "bz": "business", "ca": "cached", "cb": "cancel", "cc": "codec",
    "cd": "code", "cg": "category", "ch": "changed", "ci": "client", "cj": "channels", "ck": "clicked",
    "cl": "canceled", "cm": "cmcd", "cn": "config", "co": "count", "ce": "counter", "cp": "complete",
    "cq": "creator", "cr": "creative", "cs": "captions", "ct": "content", "cu": "current", "cv": "cumulative",
    "cx": "connection", "cz": "context", "da": "data", "dg": "downscaling", "dm": "domain", "dn": "cdn",
    "do": "downscale", "dr": "drm", "dp": "dropped", "du": "duration", "dv": "device", "dy": "dynamic",
    "eb": "enabled", "ec": "encoding", "ed": "edge", "en": "end", "eg": "engine", "em": "embed", "er": "error",
    "ep": "experiments", "es": "errorcode", "et": "errortext", "ee": "event", "ev": "events", "ex": "expires",
    "ez": "exception", "fa": "failed", "fi": "first", "fm": "family", "ft": "format", "fp": "fps",
    "fq": "frequency", "fr": "frame", "fs": "fullscreen", "ha": "has", "hb": "holdback", "he": "headers",
    "ho": "host", "hn": "hostname", "ht": "height", "id": "id", "ii": "init", "in": "instance", "ip": "ip",
    "is": "is", "ke": "key", "la": "language", "lb": "labeled", "le": "level", "li": "live", "ld": "loaded",
    "lo": "load", "lw": "low", "ls": "lists", "lt": "latency", "ma": "max", "md": "media", "me": "message",
    "mf": "manifest", "mi": "mime", "ml": "midroll", "mm": "min", "mn": "manufacturer", "mo": "model",
    "mp": "mode", "ms": "ms", "mx": "mux", "ne": "newest", "nm": "name", "no": "number", "on": "on",
    "or": "origin", "os": "os", "pa": "paused", "pb": "playback", "pd": "producer", "pe": "percentage",
    "pf": "played", "pg": "program", "ph": "playhead", "pi": "plugin", "pl": "preroll", "pn": "playing",
    "po": "poster", "pp": "pip", "pr": "preload", "ps": "position", "pt": "part", "pv": "previous",
    "py": "property", "px": "pop", "pz": "plan", "ra": "rate", "rd": "requested", "re": "rebuffer",
    "rf": "rendition", "rg": "range", "rm": "remote", "ro": "ratio", "rp": "response", "rq": "request",
    "rs": "requests", "sa": "sample", "sd": "skipped", "se": "session", "sh": "shift", "si": "sid", "sk": "seek",
    "sm": "stream", "so": "source", "sq": "sequence", "sr": "series", "ss": "status", "st": "start",
    "su": "startup", "sv": "server", "sw": "software", "sy": "severity", "ta": "tag", "tc": "tech", "te": "text",
    "tg": "target", "th": "throughput", "ti": "time", "tl": "total", "to": "to", "tr": "track", "tt": "title",
    "ty": "type", "ug": "upscaling", "un": "universal", "up": "upscale", "ur": "url", "us": "user",
    "va": "variant", "vd": "viewed", "vi": "video", "ve": "version", "vw": "view", "vr": "viewer", "wd": "width",
    "wa": "watch", "wt": "waiting",
}


def _later_words(rest: str) -> list[str] | None:
    words: list[str] = []
    at = 0
    while at < len(rest):
        if rest[at] == "_":  # a word without an abbreviation, sent whole between underscores
            end = rest.find("_", at + 1)
            if end <= at + 1:
                return None
            words.append(rest[at + 1:end])
            at = end + 1
        elif rest[at].isdigit():
            end = at
            while end < len(rest) and rest[end].isdigit():
                end += 1
            words.append(rest[at:end])
            at = end
        else:
            word = LATER_WORDS.get(rest[at:at + 2])
            if word is None:
                return None
            words.append(word)
            at += 2
    return words


@lru_cache(maxsize=4096)
def expand_key(key: str) -> str:
    """The field name ``key`` abbreviates (``"pphti"`` → ``"player_playhead_time"``); ``key`` itself when it does
    not parse with the tables (already a long name, or a word a newer SDK added)."""
    if not key:
        return key
    first = FIRST_WORDS.get(key[0])
    rest = key[1:]
    if first is None:
        first, underscore, rest = key.partition("_")
        if not underscore or not first.isalpha():
            return key
    words = _later_words(rest)
    if words is None or (not words and key[0] not in FIRST_WORDS):
        return key
    return "_".join([first, *words])


def expand_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """One beacon event with every key expanded; nested objects (request details) keep their own keys."""
    return {expand_key(key): value for key, value in event.items()}
