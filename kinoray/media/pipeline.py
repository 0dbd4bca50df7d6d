"""The whole-asset transcode: probe → index → plan → (chunks ∥ audio) → package → publish.

Pure orchestration over the media functions. Parallelism is injected as an :data:`Executor` (sequential
here; :mod:`kinoray.cluster` supplies a Ray one), so this module never imports Ray. Output is built in a
staging directory beside ``out_dir`` and renamed into place only when everything succeeded, so a failure
never leaves a half-published asset and never touches what ``out_dir`` already held.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from kinoray.encoders import EncoderChoice, get_backend, select_encoder
from kinoray.errors import InvalidMediaError, TranscodeError
from kinoray.media import validate
from kinoray.media.audio import AudioResult, encode_audio
from kinoray.media.keyframes import index_keyframes, scan_streams
from kinoray.media.ladder import Rendition, build_ladder
from kinoray.media.manifest import dash_mpd, hls_master_playlist, hls_media_playlist
from kinoray.media.package import Track, build_track, write_cmaf_track, write_static_mp4
from kinoray.media.plan import ChunkPlan, plan_chunks
from kinoray.media.probe import MediaInfo, probe
from kinoray.media.transcode import ChunkResult, EncodeOptions, transcode_chunk
from kinoray.settings import InputLimits

__all__ = [
    "AssetPlan",
    "EncoderUsed",
    "Executor",
    "TranscodeOptions",
    "TranscodeResult",
    "audio_call",
    "package_asset",
    "prepare_asset",
    "publish_directory",
    "run_chunk",
    "sequential_executor",
    "summarise_asset",
    "transcode_file",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Runs zero-argument picklable callables, yielding ``(position, result)`` as each finishes.
Executor = Callable[[list[Callable[[], Any]]], Iterator[tuple[int, Any]]]
ProgressCallback = Callable[[int, int], None]  # (frames done, frames total)

AUDIO_DIR = "audio"
STATIC_VIDEO = "highest.mp4"
STATIC_AUDIO = "audio.m4a"


def sequential_executor(calls: list[Callable[[], Any]]) -> Iterator[tuple[int, Any]]:
    """Run in this process, in order."""
    for position, call in enumerate(calls):
        yield position, call()


@dataclass(frozen=True)
class TranscodeOptions:
    codec: str = "h264"
    encoder: str = "auto"
    ladder: tuple[int, ...] | None = None  # short sides; None = the default ladder
    segment_seconds: float = 4.0
    chunk_seconds: float = 20.0
    max_frame_rate: int = 60
    parallelism: int | None = None  # workers that will run chunks; chunk counts are then made a multiple of it
    preset: str | None = None
    quality: int | None = None
    threads: int = 1
    parallel_renditions: bool = True  # each rendition's encoder on its own thread (see EncodeOptions)
    decoder: str = "auto"  # auto | cpu | nvdec
    audio_bitrate: int = 128_000
    limits: InputLimits = field(default_factory=InputLimits)
    #: Keep only ``[clip_start, clip_end)`` seconds of the source's timeline (clips, test assets); frame-accurate.
    clip_start: float | None = None
    clip_end: float | None = None
    #: EBU R128 loudness normalization of the audio (FFmpeg's ``loudnorm``, see :mod:`kinoray.media.audio`).
    normalize_audio: bool = False
    #: Burn the test-asset mark into every rendition (:mod:`kinoray.media.watermark`).
    watermark: bool = False

    def encode_options(self) -> EncodeOptions:
        return EncodeOptions(codec=self.codec, preset=self.preset, quality=self.quality, threads=self.threads,
                             decoder=self.decoder, parallel_renditions=self.parallel_renditions,
                             watermark=self.watermark)

    def clip_range(self) -> tuple[Fraction | None, Fraction | None]:
        """The clip's ends as exact fractions (``2.5`` is 5/2, not the float's binary neighbour)."""
        return tuple(None if value is None else Fraction(str(value))  # type: ignore[return-value]
                     for value in (self.clip_start, self.clip_end))


@dataclass(frozen=True)
class RenditionSummary:
    name: str
    width: int
    height: int
    codec_string: str
    bandwidth: int
    average_bandwidth: int
    segments: int
    frames: int
    bytes: int


@dataclass(frozen=True)
class TranscodeResult:
    out_dir: str
    master_playlist: str
    dash_manifest: str
    static_rendition: str
    duration_seconds: float
    frames: int
    frame_rate: str | None
    segments: int
    renditions: tuple[RenditionSummary, ...]
    audio: dict[str, Any] | None
    encoder: str | None
    decoders: tuple[str, ...]  # what decoded the chunks ("cpu", "cuda")
    scalers: tuple[str, ...]  # what scaled them ("swscale", "torch-cuda")
    fallback_from: str | None
    fallback_reason: str | None
    chunks: int
    wall_seconds: float
    encode_cpu_seconds: float
    realtime_factor: float  # asset seconds per wall second
    cfr_rule: str | None
    chunk_stats: dict[str, int]
    stage_seconds: dict[str, float]  # wall time of plan (probe+index+plan), encode and package
    retries: int = 0  # chunk re-runs after a worker or node died (cluster runs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AssetPlan:
    """Everything decided before encoding: what the source is, how it is cut, and the ladder."""

    info: MediaInfo  # info.path is the source path or URL
    plan: ChunkPlan | None  # None for audio-only input
    ladder: tuple[Rendition, ...]
    options: TranscodeOptions

    @property
    def frame_count(self) -> int:
        return self.plan.frame_count if self.plan else 0

    @property
    def duration_seconds(self) -> Fraction:
        if self.plan is not None:
            return self.plan.duration_seconds
        window = self.audio_window()
        if window is not None:
            return window[1]
        return self.info.duration_seconds or Fraction(0)

    def audio_window(self) -> tuple[Fraction, Fraction] | None:
        """``(origin, duration)`` in source seconds the audio is cut to: the video's timeline, or for
        audio-only input the clip range (from the audio's first sample); ``None``: keep the whole stream."""
        if self.plan is not None:
            return self.plan.origin_seconds, self.plan.duration_seconds
        start, end = self.options.clip_range()
        audio = self.info.audio
        if (start is None and end is None) or audio is None:
            return None
        total = audio.duration_seconds or self.info.duration_seconds or Fraction(0)
        first = Fraction(audio.start_pts or 0) * audio.time_base
        start = start or Fraction(0)
        end = total if end is None else min(end, total)
        if start >= end:
            raise InvalidMediaError(f"the clip [{float(start):g} s, {float(end):g} s) holds no audio of the "
                                    f"{float(total):g} s input")
        return first + start, end - start


def prepare_asset(source: str, options: TranscodeOptions | None = None) -> AssetPlan:
    """Probe, index, validate and plan ``source`` (a path or URL) and build its ladder. Reads every packet once,
    decodes the first frame and the last GOP (:mod:`kinoray.media.validate`), encodes nothing.

    Raises:
        InvalidMediaError / MediaLimitError / UnsupportedMediaError: the input cannot be used (the message
            says why: truncated, still image, too small, broken timing, ...).
    """
    options = options or TranscodeOptions()
    info = probe(source, options.limits)
    plan: ChunkPlan | None = None
    ladder: tuple[Rendition, ...] = ()
    if info.video is not None:
        index = index_keyframes(source, info.video.index)
        validate.check_packets(info, index.extents, index)
        clip_start, clip_end = options.clip_range()
        plan = plan_chunks(info, index, segment_seconds=options.segment_seconds,
                           chunk_seconds=options.chunk_seconds, max_frame_rate=options.max_frame_rate,
                           parallelism=options.parallelism, clip_start=clip_start, clip_end=clip_end)
        validate.check_plan(plan)
        ladder = build_ladder(info.video, options.ladder, options.codec)
        validate.check_tail(info, index)
        extents = index.extents
    else:
        extents = scan_streams(source)
        validate.check_packets(info, extents)
    validate.check_audio_tail(info, extents)
    asset = AssetPlan(info=info, plan=plan, ladder=ladder, options=options)
    asset.audio_window()  # an audio-only clip that holds no audio is refused before any work
    return asset


def _staging_paths(out_dir: Path) -> tuple[Path, Path]:
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return out_dir.parent / f".{out_dir.name}.staging-{tag}", out_dir.parent / f".{out_dir.name}.work-{tag}"


def publish_directory(staging: Path, out_dir: Path) -> None:
    """Swap the finished staging directory into ``out_dir`` (replacing a previous output at the end)."""
    if out_dir.exists():
        backup = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, backup)
        os.replace(staging, out_dir)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, out_dir)


def transcode_file(
    source: str,
    out_dir: str | Path,
    options: TranscodeOptions | None = None,
    *,
    executor: Executor = sequential_executor,
    progress: ProgressCallback | None = None,
) -> TranscodeResult:
    """Transcode ``source`` into a CMAF HLS/DASH package in ``out_dir``.

    ``out_dir`` receives ``master.m3u8``, ``manifest.mpd``, one folder per rendition (``init.mp4``,
    ``seg_NNNNN.m4s``, ``index.m3u8``), ``audio/`` and ``highest.mp4`` (``audio.m4a`` for audio-only input).

    Raises:
        InvalidMediaError / MediaLimitError: from probing, before any work.
        EncoderUnavailableError: the requested encoder cannot run here.
        TranscodeError: a chunk or packaging step failed; nothing is published.
    """
    options = options or TranscodeOptions()
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    asset = prepare_asset(source, options)
    choice = select_encoder(options.codec, options.encoder) if asset.plan is not None else None
    staging, work = _staging_paths(out_dir)
    staging.mkdir()
    work.mkdir()
    stages = {"plan": time.perf_counter() - started}
    try:
        mark = time.perf_counter()
        chunk_results, audio = _encode(asset, choice, work, executor, progress)
        stages["encode"] = time.perf_counter() - mark
        mark = time.perf_counter()
        tracks, audio_track = package_asset(asset, chunk_results, audio, staging)
        publish_directory(staging, out_dir)
        stages["package"] = time.perf_counter() - mark
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summarise_asset(asset, EncoderUsed.of(choice), chunk_results, audio, tracks, audio_track, out_dir,
                           time.perf_counter() - started, stages)


@dataclass(frozen=True)
class EncoderUsed:
    """Which encoder ran an asset's chunks, and what it replaced (for the result and the job record)."""

    name: str | None
    fallback_from: str | None = None
    fallback_reason: str | None = None

    @classmethod
    def of(cls, choice: EncoderChoice | None) -> EncoderUsed:
        if choice is None:
            return cls(None)
        return cls(choice.name, choice.fallback_from, choice.fallback_reason)


def _encode(
    asset: AssetPlan,
    choice: EncoderChoice | None,
    work: Path,
    executor: Executor,
    progress: ProgressCallback | None,
) -> tuple[list[ChunkResult], AudioResult | None]:
    info, plan, options = asset.info, asset.plan, asset.options
    calls: list[Callable[[], Any]] = []
    if plan is not None and choice is not None:
        calls += [
            functools.partial(run_chunk, plan, chunk.index, asset.ladder, options.codec, choice.name, str(work),
                              options.encode_options())
            for chunk in plan.chunks
        ]
    if info.audio is not None:
        calls.append(functools.partial(audio_call(asset), work / AUDIO_DIR / "audio"))
    results: dict[int, Any] = {}
    total = plan.frame_count if plan else 1
    done = 0
    for position, result in executor(calls):
        results[position] = result
        if isinstance(result, ChunkResult):
            done += result.frame_count
        if progress is not None:
            progress(done if plan else int(isinstance(result, AudioResult)), total)
    chunk_results = [results[i] for i in range(len(plan.chunks))] if plan else []
    audio = results.get(len(calls) - 1) if info.audio is not None else None
    return chunk_results, audio


def audio_call(asset: AssetPlan) -> Callable[[Path], AudioResult]:
    """``encode_audio`` for ``asset`` on the video's timeline, waiting only for the output base path."""
    assert asset.info.audio is not None
    window = asset.audio_window()
    return functools.partial(
        encode_audio, asset.info.path, asset.info.audio,
        origin_seconds=window[0] if window else None,
        duration_seconds=window[1] if window else None,
        bitrate=asset.options.audio_bitrate,
        normalize=asset.options.normalize_audio,
    )


def run_chunk(plan: ChunkPlan, chunk_index: int, ladder: tuple[Rendition, ...], codec: str, backend: str,
              work_dir: str, options: EncodeOptions) -> ChunkResult:
    """Picklable entry point for one chunk (what an executor ships to a worker)."""
    return transcode_chunk(plan, plan.chunks[chunk_index], ladder, get_backend(codec, backend),
                           work_dir=Path(work_dir), options=options)


def package_asset(
    asset: AssetPlan,
    chunk_results: list[ChunkResult],
    audio: AudioResult | None,
    staging: Path,
) -> tuple[list[Track], Track | None]:
    """Stitch the chunks' packets into CMAF tracks and write the HLS/DASH manifests and static renditions
    into ``staging`` (a local directory; publishing it is the caller's move)."""
    plan, ladder, options = asset.plan, asset.ladder, asset.options
    segment_seconds = Fraction(options.segment_seconds).limit_denominator(1000)
    tracks: list[Track] = []
    if plan is not None:
        ticks = plan.frame_ticks
        durations = [(end - start) * ticks for start, end in map(plan.segment_frame_range, range(plan.segment_count))]
        for position, rendition in enumerate(ladder):
            stores = [result.renditions[position].store for result in chunk_results]
            params, files = write_cmaf_track(stores, staging / rendition.name, cut_every_keyframe=True,
                                             segment_seconds=segment_seconds)
            if len(files) != plan.segment_count:
                raise TranscodeError(f"{rendition.name}: muxer wrote {len(files)} segments, the plan has "
                                     f"{plan.segment_count}")
            tracks.append(build_track("video", rendition.name, staging / rendition.name, params, files,
                                      timescale=plan.timescale, known_durations=durations,
                                      frame_rate=plan.frame_rate))
    audio_track = None
    if audio is not None:
        params, files = write_cmaf_track([audio.store], staging / AUDIO_DIR, cut_every_keyframe=False,
                                         segment_seconds=segment_seconds)
        audio_track = build_track("audio", AUDIO_DIR, staging / AUDIO_DIR, params, files,
                                  timescale=audio.sample_rate)
    for track in tracks + ([audio_track] if audio_track else []):
        (staging / track.name / "index.m3u8").write_text(hls_media_playlist(track))
    (staging / "master.m3u8").write_text(hls_master_playlist(tracks, audio_track))
    duration = plan.duration_seconds if plan else (audio.duration_seconds if audio else Fraction(0))
    (staging / "manifest.mpd").write_text(dash_mpd(tracks, audio_track, duration, segment_seconds))
    if plan is not None:
        write_static_mp4(staging / STATIC_VIDEO, [r.renditions[0].store for r in chunk_results],
                         audio.store if audio else None)
    elif audio is not None:
        write_static_mp4(staging / STATIC_AUDIO, [], audio.store)
    return tracks, audio_track


def summarise_asset(asset: AssetPlan, encoder: EncoderUsed, chunk_results: list[ChunkResult],
                    audio: AudioResult | None, tracks: list[Track], audio_track: Track | None, out_dir: Path | str,
                    wall: float, stages: dict[str, float], retries: int = 0) -> TranscodeResult:
    """The :class:`TranscodeResult` of a finished asset (``out_dir`` may be a URL)."""
    plan = asset.plan
    out = str(out_dir).rstrip("/")
    duration = float(plan.duration_seconds if plan else (audio.duration_seconds if audio else 0))
    renditions = tuple(
        RenditionSummary(
            name=track.name, width=track.width, height=track.height, codec_string=track.codec_string,
            bandwidth=track.peak_bandwidth, average_bandwidth=track.average_bandwidth,
            segments=len(track.segments), frames=plan.frame_count if plan else 0,
            bytes=sum(s.bytes for s in track.segments),
        )
        for track in tracks
    )
    stats = {key: sum(getattr(r, f"{key}_frames") for r in chunk_results)
             for key in ("decoded", "preroll", "repeated", "dropped", "concealed")}
    return TranscodeResult(
        out_dir=out,
        master_playlist=f"{out}/master.m3u8",
        dash_manifest=f"{out}/manifest.mpd",
        static_rendition=f"{out}/{STATIC_VIDEO if plan else STATIC_AUDIO}",
        duration_seconds=duration,
        frames=plan.frame_count if plan else 0,
        frame_rate=str(plan.frame_rate) if plan else None,
        segments=plan.segment_count if plan else (len(audio_track.segments) if audio_track else 0),
        renditions=renditions,
        audio=None if audio_track is None or audio is None else {
            "codec_string": audio_track.codec_string, "channels": audio.channels,
            "sample_rate": audio.sample_rate, "bandwidth": audio_track.peak_bandwidth,
            "segments": len(audio_track.segments), "duration_seconds": float(audio.duration_seconds)},
        encoder=encoder.name,
        decoders=tuple(sorted({r.decoder for r in chunk_results})),
        scalers=tuple(sorted({r.scaler for r in chunk_results})),
        fallback_from=encoder.fallback_from,
        fallback_reason=encoder.fallback_reason,
        chunks=len(chunk_results),
        wall_seconds=wall,
        encode_cpu_seconds=sum(r.cpu_seconds for r in chunk_results),
        realtime_factor=duration / wall if wall else 0.0,
        cfr_rule=plan.cfr_rule if plan else None,
        chunk_stats=stats,
        stage_seconds=stages,
        retries=retries,
    )


