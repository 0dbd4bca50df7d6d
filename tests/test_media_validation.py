"""Media validation (issue 14, item 5): bad media is refused with a typed reason and nothing is published; good
media of every container becomes a playable asset.

The corpus (:data:`CASES`, over 60 files plus the ``tests.media`` bad kinds) is generated here with Debian's
``ffmpeg`` and byte surgery in Python: truncations of MP4/MOV/MKV/WebM/MPEG-TS/M4A at several points (and on a
TS packet boundary), headers without media, ``mdhd`` timescales of 0 and 1, a forged ``mvhd`` duration, still
images renamed ``.mp4`` and single pictures muxed as video, single-frame and 20-s-per-frame videos, pictures
of 1×1 to 15×15 (coded or displayed), garbage, text, HTML and empty files — and good files of each container,
audio-only files (one with cover art), the smallest accepted picture (16×16), odd frame rates, Motion-JPEG and
an animated GIF.

Who checks what (kept well under three minutes on a loaded 2-core machine):

* every file goes through the media layer directly (:func:`prepare_asset`: probe, index, validation, plan —
  no encoding): each bad file raises its expected typed error, fast; each good file plans;
* the CLI (``kinoray transcode --workers 1``) runs one bad file of every failure class (in-process through
  ``kinoray.cli.main``, and two as real subprocesses): one typed JSON line on stderr, exit 2, no traceback,
  no output directory; and a subset of the good files, whose HLS output Debian's ffmpeg decodes cleanly;
* the API (``tests.api_server.ApiServer`` with the job runner) takes one bad file per failure class and two
  good ones: every bad asset ends ``errored`` with the typed reason, its stream URL answers 4xx and nothing
  exists under its media prefix; the good ones end ``ready`` and play through the edge (ffmpeg decodes the
  master playlist).
"""

from __future__ import annotations

import json
import random
import re
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from kinoray.errors import InvalidMediaError, MediaError, MediaLimitError, UnsupportedMediaError
from kinoray.media.ladder import MIN_RUNG, RUNG_NAME, build_ladder
from kinoray.media.pipeline import TranscodeOptions, prepare_asset
from tests import oracles
from tests.media import make_bad_media

FFMPEG = "ffmpeg"
OPTIONS = TranscodeOptions(ladder=(90,), segment_seconds=2, chunk_seconds=4)

TRUNCATED = r"truncated"
EMPTY = r"empty|returned no data"  # the API's ingest refuses an empty download before the media layer sees it
NOT_READABLE = rf"not a readable media file|no decodable frame|no video packets|{EMPTY}"
STILL = r"still image"
TOO_SMALL = r"smaller than 16 px"
TIMING = r"timescale|timestamps are broken|timing is broken"


@dataclass(frozen=True)
class Case:
    build: Callable[[Corpus, Path], None]
    error: type[MediaError] | None = None  # None: a good file
    match: str = ""
    kind: str = ""  # the failure class (CLI and API run one file of each)


# --- generation ------------------------------------------------------------------------------------------------


def ffmpeg(*args: str | Path) -> None:
    subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y", *map(str, args)], check=True,
                   timeout=120)


def video_in(size: str = "160x90", rate: str = "25", seconds: float = 4) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]


def audio_in(seconds: float = 4) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]


X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-b:a", "64k"]


class Corpus:
    """Builds each file once, on first use, in one directory; bases are shared by their derivatives."""

    def __init__(self, directory: Path, media_dir: Path) -> None:
        self.directory, self.media_dir = directory, media_dir
        self.built: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        if name not in self.built:
            if name.startswith("media:"):  # a tests.media bad kind
                self.built[name] = make_bad_media(name.removeprefix("media:"), self.media_dir)
            else:
                target = self.directory / name
                (BASES.get(name) or CASES[name].build)(self, target)
                self.built[name] = target
        return self.built[name]


def base_mp4(corpus: Corpus, out: Path) -> None:
    ffmpeg(*video_in(), *audio_in(), *X264, *AAC, "-movflags", "+faststart", out)


def base_mp4_moov_last(corpus: Corpus, out: Path) -> None:
    ffmpeg(*video_in(), *audio_in(), *X264, *AAC, out)


def remux(base: str, *extra: str) -> Callable[[Corpus, Path], None]:
    def build(corpus: Corpus, out: Path) -> None:
        ffmpeg("-i", corpus.path(base), "-c", "copy", *extra, out)
    return build


def base_webm(corpus: Corpus, out: Path) -> None:
    ffmpeg(*video_in(seconds=3), *audio_in(3), "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
           "-g", "25", "-c:a", "libopus", out)


def base_m4a(corpus: Corpus, out: Path) -> None:
    ffmpeg(*audio_in(), *AAC, "-movflags", "+faststart", out)


BASES: dict[str, Callable[[Corpus, Path], None]] = {
    "base.mp4": base_mp4,
    "base_moov_last.mp4": base_mp4_moov_last,
    "base.mov": remux("base.mp4", "-movflags", "+faststart"),
    "base_moov_last.mov": remux("base.mp4"),
    "base.mkv": remux("base.mp4"),
    "base.ts": remux("base.mp4"),
    "base.webm": base_webm,
    "base.m4a": base_m4a,
    "base.mka": lambda corpus, out: ffmpeg(*audio_in(), "-c:a", "libopus", out),
    "image.png": lambda corpus, out: ffmpeg(*video_in("64x48", seconds=1), "-frames:v", "1", out),
}


def cut(base: str, fraction: float, align: int = 1) -> Callable[[Corpus, Path], None]:
    """The first ``fraction`` of ``base``'s bytes (rounded down to a multiple of ``align``)."""
    def build(corpus: Corpus, out: Path) -> None:
        data = corpus.path(base).read_bytes()
        size = int(len(data) * fraction) // align * align
        out.write_bytes(data[:size])
    return build


def cut_at(base: str, marker: bytes, after: int = 0) -> Callable[[Corpus, Path], None]:
    """``base`` up to the first ``marker`` (plus ``after`` bytes): a file with headers and no media."""
    def build(corpus: Corpus, out: Path) -> None:
        data = corpus.path(base).read_bytes()
        out.write_bytes(data[: data.index(marker) + after])
    return build


def _box_payload(data: bytes, box: bytes, handler: bytes | None = None) -> int:
    """Offset just past the full-box header (version + flags) of the first ``box`` (in the trak whose ``hdlr``
    is ``handler``)."""
    position = 0
    while True:
        at = data.index(box, position)
        if handler is None or data[data.index(b"hdlr", at) + 12: data.index(b"hdlr", at) + 16] == handler:
            return at + 4
        position = at + 4


def patch_mdhd(base: str, handler: bytes, timescale: int | None = None,
               duration: int | None = None) -> Callable[[Corpus, Path], None]:
    """``base`` with the ``mdhd`` timescale and/or duration of its ``handler`` track replaced (version 0)."""
    def build(corpus: Corpus, out: Path) -> None:
        data = bytearray(corpus.path(base).read_bytes())
        at = _box_payload(bytes(data), b"mdhd", handler)
        assert data[at] == 0, "version 0 mdhd expected"
        field = at + 12  # after version/flags and the creation/modification times
        if timescale is not None:
            data[field: field + 4] = struct.pack(">I", timescale)
        if duration is not None:
            data[field + 4: field + 8] = struct.pack(">I", duration)
        out.write_bytes(bytes(data))
    return build


def patch_mvhd_duration(base: str, seconds: int) -> Callable[[Corpus, Path], None]:
    def build(corpus: Corpus, out: Path) -> None:
        data = bytearray(corpus.path(base).read_bytes())
        at = _box_payload(bytes(data), b"mvhd")
        assert data[at] == 0, "version 0 mvhd expected"
        timescale = struct.unpack(">I", data[at + 12: at + 16])[0]
        data[at + 16: at + 20] = struct.pack(">I", min(seconds * timescale, 0xFFFFFFFF))
        out.write_bytes(bytes(data))
    return build


def patch_mkv_duration(base: str, seconds: int) -> Callable[[Corpus, Path], None]:
    """``base`` with its Segment Info Duration (EBML 0x4489, a float in TimestampScale units of 1 ms) forged."""
    def build(corpus: Corpus, out: Path) -> None:
        data = bytearray(corpus.path(base).read_bytes())
        at = data.index(b"\x44\x89")
        size = data[at + 2] & 0x7F  # a one-byte EBML size (0x84 or 0x88)
        value = struct.pack(">f" if size == 4 else ">d", seconds * 1000.0)
        data[at + 3: at + 3 + size] = value
        out.write_bytes(bytes(data))
    return build


def encode(*args: str, inputs: list[str] | None = None) -> Callable[[Corpus, Path], None]:
    def build(corpus: Corpus, out: Path) -> None:
        ffmpeg(*(inputs if inputs is not None else video_in()), *args, out)
    return build


def renamed(base: str) -> Callable[[Corpus, Path], None]:
    def build(corpus: Corpus, out: Path) -> None:
        out.write_bytes(corpus.path(base).read_bytes())
    return build


def image(codec_args: list[str], ext: str) -> Callable[[Corpus, Path], None]:
    """A still image file (written as ``ext``), then renamed to the case's ``.mp4`` name."""
    def build(corpus: Corpus, out: Path) -> None:
        still = out.with_suffix(f".{ext}")
        ffmpeg(*video_in("64x48", seconds=1), "-frames:v", "1", *codec_args, "-update", "1", still)
        still.rename(out)
    return build


def raw(payload: bytes) -> Callable[[Corpus, Path], None]:
    def build(corpus: Corpus, out: Path) -> None:
        out.write_bytes(payload)
    return build


def ftyp_then_garbage(corpus: Corpus, out: Path) -> None:
    head = corpus.path("base.mp4").read_bytes()[:32]
    out.write_bytes(head + random.Random(7).randbytes(32 * 1024))


def tiny(size: str, *, codec: list[str] | None = None, sar: str = "1") -> Callable[[Corpus, Path], None]:
    """A 2 s clip of exactly ``size`` pixels (scaled to it in 4:4:4, so odd and 1-pixel sizes stay exact; FFV1
    by default) with sample aspect ``sar``."""
    def build(corpus: Corpus, out: Path) -> None:
        width, height = size.split("x")
        source = ["-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25:duration=2"]
        ffmpeg(*source, "-vf", f"scale={width}:{height},format=yuv444p,setsar={sar}",
               *(codec or ["-c:v", "ffv1"]), out)
    return build


def with_cover_art(corpus: Corpus, out: Path) -> None:
    ffmpeg(*audio_in(), "-i", corpus.path("image.png"), "-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame",
           "-c:v", "png", "-disposition:v", "attached_pic", out)


CASES: dict[str, Case] = {
    # --- good: every container, audio-only, the smallest picture, odd rates --------------------------------
    "good_faststart.mp4": Case(renamed("base.mp4")),
    "good_moov_last.mp4": Case(renamed("base_moov_last.mp4")),
    "good.mov": Case(renamed("base.mov")),
    "good.mkv": Case(renamed("base.mkv")),
    "good.webm": Case(renamed("base.webm")),
    "good.ts": Case(renamed("base.ts")),
    "good_audio_only.m4a": Case(renamed("base.m4a")),
    "good_audio_only.mka": Case(renamed("base.mka")),
    "good_audio_only.wav": Case(encode("-c:a", "pcm_s16le", inputs=audio_in(3))),
    "good_mp3_with_cover_art.mp3": Case(with_cover_art),
    "good_16x16.mp4": Case(tiny("16x16", codec=["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])),
    "good_17x17.mkv": Case(tiny("17x17")),
    "good_16x200_portrait.mkv": Case(tiny("16x200")),
    "good_1fps.mp4": Case(encode(*X264, "-r", "1", inputs=video_in(rate="1", seconds=6))),
    "good_120fps.mp4": Case(encode(*X264, inputs=video_in(rate="120", seconds=1))),
    "good_23.976fps.mkv": Case(encode(*X264, inputs=video_in(rate="24000/1001", seconds=3))),
    "good_7fps.ts": Case(encode(*X264, inputs=video_in(rate="7", seconds=3))),
    "good_mjpeg.avi": Case(encode("-c:v", "mjpeg", "-q:v", "5", inputs=video_in(seconds=2))),
    "good_animated.gif": Case(encode(inputs=video_in("80x60", rate="10", seconds=2))),
    # forged MP4 durations the demuxer ignores (it times the samples): the asset is right, at 4 s
    "good_mdhd_duration_zero_is_ignored.mp4": Case(patch_mdhd("base.mp4", b"vide", duration=0)),
    "good_mvhd_duration_10h_is_ignored.mp4": Case(patch_mvhd_duration("base.mp4", 10 * 3600)),
    # --- truncated: several points of every container ------------------------------------------------------
    **{f"cut{int(f * 100)}_faststart.mp4": Case(cut("base.mp4", f), InvalidMediaError, TRUNCATED, "truncated_mp4")
       for f in (0.25, 0.5, 0.75, 0.85)},
    **{f"cut{int(f * 100)}_faststart.mov": Case(cut("base.mov", f), InvalidMediaError, TRUNCATED, "truncated_mov")
       for f in (0.25, 0.5, 0.75, 0.85)},
    **{f"cut{int(f * 100)}.mkv": Case(cut("base.mkv", f), InvalidMediaError, TRUNCATED, "truncated_mkv")
       for f in (0.25, 0.5, 0.75, 0.85)},
    **{f"cut{int(f * 100)}.webm": Case(cut("base.webm", f), InvalidMediaError, TRUNCATED, "truncated_webm")
       for f in (0.25, 0.5, 0.75, 0.85)},
    **{f"cut{int(f * 100)}.ts": Case(cut("base.ts", f), InvalidMediaError, TRUNCATED, "truncated_ts")
       for f in (0.25, 0.5, 0.75, 0.85)},
    **{f"cut{int(f * 100)}_on_packet_boundary.ts": Case(cut("base.ts", f, align=188), InvalidMediaError, TRUNCATED,
                                                        "truncated_ts_aligned")
       for f in (0.5, 0.75)},
    **{f"cut{int(f * 100)}.m4a": Case(cut("base.m4a", f), InvalidMediaError, TRUNCATED, "truncated_audio")
       for f in (0.5, 0.8)},
    "cut50.mka": Case(cut("base.mka", 0.5), InvalidMediaError, TRUNCATED, "truncated_audio"),
    "cut50_moov_last.mp4": Case(cut("base_moov_last.mp4", 0.5), InvalidMediaError, NOT_READABLE, "unreadable"),
    "cut50_moov_last.mov": Case(cut("base_moov_last.mov", 0.5), InvalidMediaError, NOT_READABLE, "unreadable"),
    "headers_only.mp4": Case(cut_at("base.mp4", b"mdat", after=4), InvalidMediaError, f"{TRUNCATED}|{NOT_READABLE}",
                             "headers_only"),
    "headers_only.mkv": Case(cut_at("base.mkv", b"\x1f\x43\xb6\x75"), InvalidMediaError, NOT_READABLE,
                             "headers_only"),
    # --- timing: zero/absurd timescales and durations ------------------------------------------------------
    "mdhd_timescale_0.mp4": Case(patch_mdhd("base.mp4", b"vide", timescale=0), InvalidMediaError, TIMING, "timescale"),
    "mdhd_timescale_1.mp4": Case(patch_mdhd("base.mp4", b"vide", timescale=1), InvalidMediaError, TIMING, "timescale"),
    "mdhd_timescale_0_audio.mp4": Case(patch_mdhd("base.mp4", b"soun", timescale=0), InvalidMediaError, TIMING, "timescale"),
    "segment_duration_10h.mkv": Case(patch_mkv_duration("base.mkv", 10 * 3600), InvalidMediaError, TRUNCATED,
                                     "declared_duration"),
    "segment_duration_1000h.mkv": Case(patch_mkv_duration("base.mkv", 1000 * 3600), MediaLimitError, "exceeds",
                                       "declared_duration_over_limit"),
    "one_frame_every_20s.mp4": Case(encode(*X264, inputs=video_in(rate="1/20", seconds=60)), InvalidMediaError,
                                    r"20s apart", "slow_rate"),
    # --- still images posing as video ----------------------------------------------------------------------
    "png_renamed.mp4": Case(image([], "png"), UnsupportedMediaError, STILL, "still"),
    "jpeg_renamed.mp4": Case(image([], "jpg"), UnsupportedMediaError, STILL, "still"),
    "bmp_renamed.mp4": Case(image([], "bmp"), UnsupportedMediaError, STILL, "still"),
    "gif_renamed.mp4": Case(image([], "gif"), UnsupportedMediaError, STILL, "still"),
    "webp_renamed.mp4": Case(image(["-c:v", "libwebp"], "webp"), UnsupportedMediaError, STILL, "still"),
    "tiff_renamed.mp4": Case(image([], "tiff"), UnsupportedMediaError, STILL, "still"),
    "png_picture_in.mp4": Case(encode("-frames:v", "1", "-c:v", "png"), UnsupportedMediaError, STILL, "still"),
    "mjpeg_picture_in.mov": Case(encode("-frames:v", "1", "-c:v", "mjpeg"), UnsupportedMediaError, STILL, "still"),
    "one_h264_frame_zero_duration.mp4": Case(encode("-frames:v", "1", *X264), UnsupportedMediaError, STILL,
                                             "single_frame"),
    "one_h264_frame.mkv": Case(encode("-frames:v", "1", *X264), UnsupportedMediaError, STILL, "single_frame"),
    # --- pictures too small to stream ----------------------------------------------------------------------
    "tiny_1x1.mkv": Case(tiny("1x1"), MediaLimitError, TOO_SMALL, "too_small"),
    "tiny_2x2.mkv": Case(tiny("2x2"), MediaLimitError, TOO_SMALL, "too_small"),
    "tiny_3x3.mkv": Case(tiny("3x3"), MediaLimitError, TOO_SMALL, "too_small"),
    "tiny_15x15.mkv": Case(tiny("15x15"), MediaLimitError, TOO_SMALL, "too_small"),
    "tiny_3x3_h264.mp4": Case(tiny("3x3", codec=["-c:v", "libx264", "-preset", "ultrafast"]), MediaLimitError,
                              TOO_SMALL, "too_small"),
    "tiny_8x64.mkv": Case(tiny("8x64"), MediaLimitError, TOO_SMALL, "too_small"),
    "tiny_15x1000.mkv": Case(tiny("15x1000"), MediaLimitError, TOO_SMALL, "too_small"),
    "tiny_displayed_8x64.mkv": Case(tiny("64x64", sar="1/8"), MediaLimitError, TOO_SMALL, "too_small"),
    # --- not media at all ----------------------------------------------------------------------------------
    "empty.mp4": Case(raw(b""), InvalidMediaError, EMPTY, "garbage"),
    "empty.ts": Case(raw(b""), InvalidMediaError, EMPTY, "garbage"),
    "zeros.mp4": Case(raw(bytes(256 * 1024)), InvalidMediaError, NOT_READABLE, "garbage"),
    "random.mp4": Case(raw(random.Random(1).randbytes(64 * 1024)), InvalidMediaError, NOT_READABLE, "garbage"),
    "random.ts": Case(raw(random.Random(2).randbytes(64 * 1024)), InvalidMediaError, NOT_READABLE, "garbage"),
    "text.mp4": Case(raw(b"just some words, not a video\n" * 100), InvalidMediaError, NOT_READABLE, "garbage"),
    "page.mp4": Case(raw(b"<!doctype html><html><body>404 Not Found</body></html>\n"), InvalidMediaError,
                     NOT_READABLE, "garbage"),
    "ftyp_then_garbage.mp4": Case(ftyp_then_garbage, InvalidMediaError, NOT_READABLE, "garbage"),
}

#: tests.media's bad kinds, counted in the corpus (their expectations are tests/test_bad_input.py's)
MEDIA_KINDS: dict[str, tuple[type[MediaError], str]] = {
    "truncated": (InvalidMediaError, NOT_READABLE),
    "truncated_faststart": (InvalidMediaError, TRUNCATED),
    "truncated_ts": (InvalidMediaError, TRUNCATED),
    "corrupt": (InvalidMediaError, "corrupt"),
    "zero": (InvalidMediaError, EMPTY),
    "text": (InvalidMediaError, NOT_READABLE),
    "garbage": (InvalidMediaError, NOT_READABLE),
    "absurd_dimensions": (MediaLimitError, "100000x2000"),
    "invalid_dimensions": (InvalidMediaError, NOT_READABLE),
    "no_video_frames": (InvalidMediaError, NOT_READABLE),
    "no_video_frames_mp4": (InvalidMediaError, NOT_READABLE),
}
for _kind, (_error, _match) in MEDIA_KINDS.items():
    CASES[f"media:{_kind}"] = Case(lambda corpus, out: None, _error, _match, f"media_{_kind}")

GOOD = sorted(name for name, case in CASES.items() if case.error is None)
BAD = sorted(name for name, case in CASES.items() if case.error is not None)
#: one bad file of every failure class (the CLI and API run these)
ONE_PER_CLASS = sorted({case.kind: name for name, case in sorted(CASES.items(), reverse=True) if case.error}.values())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("corpus"), media_dir)


def test_corpus_is_large_and_covers_each_container() -> None:
    assert len(CASES) >= 60
    suffixes = {Path(name).suffix for name in GOOD}
    assert {".mp4", ".mov", ".mkv", ".webm", ".ts", ".m4a"} <= suffixes


# --- the media layer: every file ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", BAD)
def test_bad_media_is_refused_with_a_typed_reason_before_encoding(name: str, corpus: Corpus) -> None:
    case = CASES[name]
    path = corpus.path(name)
    started = time.perf_counter()
    with pytest.raises(MediaError) as caught:
        prepare_asset(str(path), OPTIONS)
    assert type(caught.value) is case.error, f"{name}: {type(caught.value).__name__}: {caught.value}"
    assert re.search(case.match, str(caught.value)), f"{name}: {caught.value}"
    assert "\n" not in str(caught.value)
    assert time.perf_counter() - started < 10, "refusing a small file must be fast"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", GOOD)
def test_good_media_plans(name: str, corpus: Corpus) -> None:
    asset = prepare_asset(str(corpus.path(name)), OPTIONS)
    assert asset.duration_seconds > 0
    for rendition in asset.ladder:
        assert RUNG_NAME.fullmatch(rendition.name) and min(rendition.width, rendition.height) >= MIN_RUNG
    if asset.plan is not None:
        assert asset.plan.frame_count >= 2


def test_cover_art_is_not_video(corpus: Corpus) -> None:
    asset = prepare_asset(str(corpus.path("good_mp3_with_cover_art.mp3")), OPTIONS)
    assert asset.info.video is None and asset.info.audio is not None and asset.plan is None


def test_ladder_never_names_a_rung_the_router_cannot_serve() -> None:
    from dataclasses import replace

    from kinoray.control.playback import RUNG_PATTERN
    from tests.test_plan_ladder import VIDEO

    for short in range(0, 10001):  # the ladder's notion of a servable name is the router's
        name = f"{short}p"
        assert bool(RUNG_NAME.fullmatch(name)) == bool(RUNG_PATTERN.fullmatch(name)) == (MIN_RUNG <= short <= 9999)
    for short in (10, 11, 16, 17, 33, 90, 181):
        video = replace(VIDEO, width=short * 2, height=short, display_width=short * 2, display_height=short)
        for heights in (None, (2,), (8, 9, 10, 11), (1080, 3), (short,)):
            ladder = build_ladder(video, heights)
            names = [r.name for r in ladder]
            assert names and len(names) == len(set(names)), (short, heights, names)
            assert all(RUNG_PATTERN.fullmatch(name) for name in names), (short, heights, names)
    with pytest.raises(UnsupportedMediaError):
        build_ladder(replace(VIDEO, width=18, height=9, display_width=18, display_height=9))


# --- the CLI: one bad file per failure class, a subset of the good ones ----------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from kinoray.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ONE_PER_CLASS)
def test_cli_prints_one_typed_line_for_bad_media(name: str, corpus: Corpus, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    code, out, err = _cli(capsys, "--log-level", "ERROR", "transcode", str(corpus.path(name)), str(tmp_path / "out"),
                          "--workers", "1", "--ladder", "90")
    assert code == 2
    assert "Traceback" not in err
    error = json.loads(err.strip().splitlines()[-1])["error"]
    assert error["type"] == case.error.type and re.search(case.match, error["messages"][0]), error
    assert list(tmp_path.iterdir()) == [], "nothing is written for a refused file"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["mdhd_timescale_0.mp4", "tiny_3x3_h264.mp4"])
def test_cli_subprocess_has_no_traceback(name: str, corpus: Corpus, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "kinoray.cli", "transcode", str(corpus.path(name)),
                           str(tmp_path / "out"), "--workers", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    *logged, last = proc.stderr.strip().splitlines()
    assert json.loads(last)["error"]["type"] == CASES[name].error.type
    # anything before it is a log record (FFmpeg's own warnings about the file), never a stack
    assert all(LOG_LINE.match(line) for line in logged), proc.stderr
    assert not (tmp_path / "out").exists()


LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")

CLI_GOOD = ["good.mkv", "good.ts", "good_16x16.mp4", "good_animated.gif", "good_mp3_with_cover_art.mp3"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", CLI_GOOD)
def test_cli_transcodes_good_media_to_a_playable_stream(name: str, corpus: Corpus, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, "--log-level", "ERROR", "transcode", str(corpus.path(name)), str(out),
                             "--workers", "1", "--ladder", "90", "--segment-seconds", "2", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert all(RUNG_NAME.fullmatch(r["name"]) for r in summary["renditions"])
    assert oracles.decode_errors(out / "master.m3u8") == ""
    if summary["renditions"]:
        assert oracles.count_frames(out / "master.m3u8") == summary["frames"] >= 2


# --- the API: errored with a typed reason and nothing playable, or ready and playable --------------------------

API_GOOD = ["good.webm", "good_audio_only.m4a"]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    from tests.api_server import Backend, api_with_runner

    backend = Backend("sqlite", tmp_path_factory.mktemp("validation-db"))
    with api_with_runner(backend.new_url(), tmp_path_factory.mktemp("validation-api"),
                         serve={"max_concurrent_jobs": 4, "poll_seconds": 0.1}) as server:
        yield server


def _create(api: Any, path: Path) -> dict[str, Any]:
    answer = api.client.post(f"{api.url}/video/v1/assets", json={
        "inputs": [{"url": f"file://{path}"}], "playback_policies": ["public"]}, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]


@pytest.mark.timeout(300)
def test_api_refuses_bad_media_and_publishes_good_media(api: Any, corpus: Corpus) -> None:
    names = ONE_PER_CLASS + API_GOOD
    created = {name: _create(api, corpus.path(name)) for name in names}
    storage = Path(api.settings.storage_url)
    problems = []
    for name, asset in created.items():
        done = api.wait_asset(asset["id"], timeout=240)
        playback_id = asset["playback_ids"][0]["id"]
        master = requests.get(f"{api.edge_url}/{playback_id}.m3u8", timeout=10)
        media = storage / "assets" / asset["id"] / "media"
        case = CASES[name]
        if case.error is None:
            if done["status"] != "ready" or master.status_code != 200:
                problems.append((name, done["status"], done.get("errors"), master.status_code))
            elif errors := oracles.decode_errors(f"{api.edge_url}/{playback_id}.m3u8"):
                problems.append((name, "ffmpeg cannot decode the stream", errors))
            continue
        errors = done.get("errors") or {}
        if (done["status"] != "errored" or errors.get("type") != case.error.type
                or not re.search(case.match, errors.get("messages", [""])[0])):
            problems.append((name, done["status"], errors))
        if not 400 <= master.status_code < 500:
            problems.append((name, "stream URL answered", master.status_code))
        if media.exists() and any(media.rglob("*")):
            problems.append((name, "files under the media prefix", sorted(map(str, media.rglob("*")))[:5]))
    assert problems == []
