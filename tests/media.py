"""Deterministic generated test media for kinoray's tests.

Everything here is produced with PyAV only (lavfi ``testsrc2`` / ``sine``
sources, encoded with the FFmpeg bundled in the ``av`` wheel).  Independent
verification of the produced files lives in :mod:`tests.oracles`, which uses
the system ``ffprobe``/``ffmpeg`` instead.

Files are cached: the file name is derived from the :class:`MediaSpec` (its
name plus a hash of all fields), so :func:`make_media` returns the existing
file when called again for the same spec and directory.  Files are written to
a temporary name first and renamed atomically, so concurrent test workers
never observe partial files.

Conventions
-----------
* ``MediaSpec.rotation`` is the *clockwise* rotation a player must apply for
  display, i.e. the legacy ``rotate`` tag that phones write.  It is stored as
  a display matrix; ffprobe reports the counter-clockwise angle, so
  ``rotation=90`` shows up as ``"rotation": -90`` in ffprobe's side data (see
  :attr:`MediaSpec.expected_ffprobe_rotation`).
* For ``vfr=True`` specs the frame gaps alternate 1/fps, 2/fps, 1/fps, ...
  in a 1/90000 time base.
* Frame times in :attr:`MediaSpec.expected_frame_times` are nominal
  (starting at 0); containers may add an offset (MPEG-TS written here starts
  at the B-frame delay, 2 frames) or round them (Matroska/WebM store
  milliseconds).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.video.frame

__all__ = [
    "BAD_KINDS",
    "MATRIX",
    "MediaSpec",
    "copy_media",
    "default_cache_dir",
    "make_bad_media",
    "make_matrix",
    "make_media",
]

#: Bump to invalidate every cached file when the generator changes behaviour.
GENERATOR_VERSION = 1

#: Time base used for variable-frame-rate clips.
VFR_TIME_BASE = Fraction(1, 90000)

#: Container name -> (file extension, FFmpeg muxer name).
_CONTAINERS: dict[str, tuple[str, str]] = {
    "mp4": ("mp4", "mp4"),
    "m4a": ("m4a", "ipod"),
    "mov": ("mov", "mov"),
    "mkv": ("mkv", "matroska"),
    "webm": ("webm", "webm"),
    "ts": ("ts", "mpegts"),
}

#: Spec codec name -> FFmpeg encoder name.
_VIDEO_ENCODERS: dict[str, str] = {
    "h264": "libx264",
    "hevc": "libx265",
    "av1": "libsvtav1",
    "vp9": "libvpx-vp9",
    "mpeg4": "mpeg4",
    "ffv1": "ffv1",
}

_AUDIO_ENCODERS: dict[str, str] = {"aac": "aac", "opus": "libopus"}

#: Encoder -> (sample format, samples per frame) fed to it.
_AUDIO_FEED: dict[str, tuple[str, int]] = {"aac": ("fltp", 1024), "libopus": ("flt", 960)}

_LAYOUTS: dict[int, str] = {1: "mono", 2: "stereo", 6: "5.1"}

#: A function writing a file at the given (temporary) path.
WriterFn = Callable[[Path], None]


@dataclass(frozen=True)
class MediaSpec:
    """A clip to generate, and the facts it is expected to have.

    ``gop`` defaults to ``2 * fps`` frames (rounded).  ``audio_codec``
    defaults to AAC, or Opus for WebM.  ``video_codec=None`` gives an
    audio-only file.
    """

    name: str
    width: int = 320
    height: int = 180
    fps: Fraction = Fraction(30)
    duration_s: Fraction | float = Fraction(6)
    container: str = "mp4"
    video_codec: str | None = "h264"
    pix_fmt: str = "yuv420p"
    gop: int | None = None
    bframes: int = 2
    open_gop: bool = False
    rotation: int = 0
    sample_aspect: Fraction = Fraction(1)
    vfr: bool = False
    audio_channels: int = 2
    audio_rate: int = 48000
    audio_codec: str | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        """Validate field combinations early, with clear messages."""
        if self.container not in _CONTAINERS:
            raise ValueError(f"unknown container {self.container!r}")
        if self.video_codec is not None and self.video_codec not in _VIDEO_ENCODERS:
            raise ValueError(f"unknown video codec {self.video_codec!r}")
        if self.video_codec is None and self.audio_channels == 0:
            raise ValueError("a spec needs video or audio")
        if self.rotation % 90 or not 0 <= self.rotation < 360:
            raise ValueError("rotation must be 0, 90, 180 or 270")
        if self.audio_channels not in (0, *_LAYOUTS):
            raise ValueError("audio_channels must be 0, 1, 2 or 6")
        if self.resolved_audio_codec == "opus" and self.audio_rate != 48000:
            raise ValueError("opus needs audio_rate=48000")
        if self.vfr and (1 / (VFR_TIME_BASE * Fraction(self.fps))).denominator != 1:
            raise ValueError("vfr needs 1/fps to be a whole number of 1/90000 ticks")

    # ----- derived encoding parameters -------------------------------------

    @property
    def duration(self) -> Fraction:
        """Requested duration in seconds as an exact Fraction."""
        return Fraction(self.duration_s)

    @property
    def resolved_gop(self) -> int:
        """Keyframe interval in frames (``gop`` or ``2 * fps``)."""
        return self.gop if self.gop is not None else max(1, round(2 * Fraction(self.fps)))

    @property
    def resolved_audio_codec(self) -> str | None:
        """Audio codec name ('aac' / 'opus'), or None without audio."""
        if self.audio_channels == 0:
            return None
        if self.audio_codec is not None:
            return self.audio_codec
        return "opus" if self.container == "webm" else "aac"

    @property
    def extension(self) -> str:
        """File extension (no dot) for the container."""
        return _CONTAINERS[self.container][0]

    @property
    def file_name(self) -> str:
        """Cache file name: spec name plus a hash of every field."""
        digest = hashlib.sha1(f"{GENERATOR_VERSION}:{self!r}".encode()).hexdigest()[:10]
        return f"{self.name}-{digest}.{self.extension}"

    # ----- expected facts ---------------------------------------------------

    @property
    def video_time_base(self) -> Fraction:
        """Time base in which frame pts are generated."""
        return VFR_TIME_BASE if self.vfr else 1 / Fraction(self.fps)

    @property
    def frame_ticks(self) -> list[int]:
        """Generated frame pts, in :attr:`video_time_base` units."""
        if self.video_codec is None:
            return []
        return list(_frame_schedule(self))

    @property
    def frame_durations(self) -> list[int]:
        """Duration (in time-base ticks) given to each generated frame."""
        return [dur for _, dur in _frame_schedule_with_durations(self)]

    @property
    def expected_video_frames(self) -> int:
        """Number of video frames encoded (0 for audio-only)."""
        return len(self.frame_ticks)

    @property
    def expected_frame_times(self) -> list[Fraction]:
        """Nominal presentation time (s) of each frame, starting at 0."""
        tb = self.video_time_base
        return [tick * tb for tick in self.frame_ticks]

    @property
    def expected_video_duration(self) -> Fraction:
        """End time of the last frame (pts + its scheduled duration), in seconds.

        Exact for CFR clips.  For ``vfr`` clips the muxed last-frame duration
        is not this (MP4 stores decode-order deltas), so compare frame times
        instead of durations there.
        """
        sched = list(_frame_schedule_with_durations(self))
        if not sched:
            return Fraction(0)
        pts, dur = sched[-1]
        return (pts + dur) * self.video_time_base

    @property
    def expected_audio_samples(self) -> int:
        """Number of audio samples per channel fed to the encoder."""
        if self.audio_channels == 0:
            return 0
        return math.floor(self.duration * self.audio_rate)

    @property
    def expected_display_size(self) -> tuple[int, int]:
        """(width, height) after applying SAR and rotation."""
        width = round(self.width * self.sample_aspect)
        height = self.height
        return (height, width) if self.rotation in (90, 270) else (width, height)

    @property
    def expected_ffprobe_rotation(self) -> int:
        """Display-matrix ``rotation`` as ffprobe reports it (CCW, -180..180]."""
        ccw = (-self.rotation) % 360
        return ccw - 360 if ccw > 180 else ccw


def _frame_schedule_with_durations(spec: MediaSpec) -> Iterator[tuple[int, int]]:
    """Yield ``(pts, duration)`` in :attr:`MediaSpec.video_time_base` ticks."""
    if spec.video_codec is None:
        return
    fps = Fraction(spec.fps)
    if not spec.vfr:
        count = math.ceil(spec.duration * fps)
        for index in range(count):
            yield index, 1
        return
    one = int(1 / (fps * VFR_TIME_BASE))
    end = spec.duration / VFR_TIME_BASE
    pts, index = 0, 0
    while pts < end:
        gap = one if index % 2 == 0 else 2 * one
        yield pts, gap
        pts += gap
        index += 1


def _frame_schedule(spec: MediaSpec) -> Iterator[int]:
    """Yield generated frame pts in :attr:`MediaSpec.video_time_base` ticks."""
    for pts, _ in _frame_schedule_with_durations(spec):
        yield pts


# ----- encoder configuration --------------------------------------------------


def _x264_options(spec: MediaSpec) -> dict[str, str]:
    """libx264 options: fixed GOP, no scene cuts, fixed B-frame pattern."""
    params = [
        f"keyint={spec.resolved_gop}",
        "scenecut=0",
        f"bframes={spec.bframes}",
        "b-adapt=0",
        f"b-pyramid={'normal' if spec.bframes >= 2 else 'none'}",
        f"open-gop={int(spec.open_gop)}",
    ]
    return {"preset": "veryfast", "x264-params": ":".join(params)}


def _x265_options(spec: MediaSpec) -> dict[str, str]:
    """libx265 options: quiet, fixed GOP, open/closed GOP as requested."""
    params = [
        "log-level=error",
        f"keyint={spec.resolved_gop}",
        f"min-keyint={spec.resolved_gop}",
        "scenecut=0",
        f"bframes={spec.bframes}",
        "b-adapt=0",
        f"b-pyramid={int(spec.bframes >= 2)}",
        f"open-gop={int(spec.open_gop)}",
    ]
    return {"preset": "ultrafast", "x265-params": ":".join(params)}


def _video_options(spec: MediaSpec) -> dict[str, str]:
    """Private encoder options for the spec's video codec."""
    codec = spec.video_codec
    if codec == "h264":
        return _x264_options(spec)
    if codec == "hevc":
        return _x265_options(spec)
    if codec == "av1":
        return {"preset": "12"}
    if codec == "vp9":
        return {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "row-mt": "1"}
    if codec == "mpeg4":
        return {"sc_threshold": "1000000000"}  # no scene-cut keyframes
    return {}


def _add_video_stream(
    container: av.container.OutputContainer, spec: MediaSpec
) -> av.video.stream.VideoStream:
    """Add and configure the video stream for ``spec``."""
    assert spec.video_codec is not None
    encoder = _VIDEO_ENCODERS[spec.video_codec]
    if encoder == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints banners otherwise
    stream = container.add_stream(encoder, rate=Fraction(spec.fps), options=_video_options(spec))
    assert isinstance(stream, av.VideoStream)
    ctx = stream.codec_context
    stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, spec.pix_fmt
    ctx.gop_size = spec.resolved_gop
    ctx.time_base = spec.video_time_base
    stream.time_base = spec.video_time_base
    if spec.video_codec == "mpeg4":
        ctx.max_b_frames = spec.bframes
        ctx.bit_rate = 600_000
    if spec.video_codec == "vp9":
        ctx.bit_rate = 400_000
    if spec.sample_aspect != 1:
        ctx.sample_aspect_ratio = Fraction(spec.sample_aspect)
    if spec.rotation:
        stream.set_display_rotation(-spec.rotation)
    return stream


def _source_frames(spec: MediaSpec) -> Iterator[av.VideoFrame]:
    """Yield ``testsrc2`` frames (at ``spec.fps``) in the spec's pix_fmt, forever."""
    source = av.open(f"testsrc2=size={spec.width}x{spec.height}:rate={Fraction(spec.fps)}", format="lavfi")
    try:
        for frame in source.decode(video=0):
            if frame.format.name != spec.pix_fmt:
                frame = frame.reformat(format=spec.pix_fmt)
            yield frame
    finally:
        source.close()


def _encode_video(stream: av.video.stream.VideoStream, spec: MediaSpec) -> list[av.Packet[av.stream.Stream]]:
    """Encode the spec's frame schedule; return the packets."""
    packets: list[av.Packet[av.stream.Stream]] = []
    tb = spec.video_time_base
    schedule = list(_frame_schedule_with_durations(spec))
    for (pts, dur), frame in zip(schedule, _source_frames(spec), strict=False):
        frame.pts = pts
        frame.duration = dur
        frame.time_base = tb
        frame.pict_type = av.video.frame.PictureType.NONE
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    if len(packets) != len(schedule):
        raise RuntimeError(f"{spec.name}: encoded {len(packets)} packets for {len(schedule)} frames")
    return packets


def _add_audio_stream(
    container: av.container.OutputContainer, spec: MediaSpec
) -> av.audio.stream.AudioStream:
    """Add and configure the audio stream for ``spec``."""
    codec = spec.resolved_audio_codec
    assert codec is not None
    encoder = _AUDIO_ENCODERS[codec]
    stream = container.add_stream(encoder, rate=spec.audio_rate)
    assert isinstance(stream, av.AudioStream)
    ctx = stream.codec_context
    ctx.layout = _LAYOUTS[spec.audio_channels]
    ctx.format = _AUDIO_FEED[encoder][0]
    ctx.bit_rate = 64_000 * max(1, spec.audio_channels // 2)
    stream.time_base = Fraction(1, spec.audio_rate)
    return stream


def _encode_audio(stream: av.audio.stream.AudioStream, spec: MediaSpec) -> list[av.Packet[av.stream.Stream]]:
    """Encode a 440 Hz ``sine`` of ``spec.duration``; return the packets."""
    sample_fmt, frame_size = _AUDIO_FEED[stream.codec_context.name]
    layout = _LAYOUTS[spec.audio_channels]
    resampler = av.AudioResampler(sample_fmt, layout, spec.audio_rate, frame_size=frame_size)
    source = av.open(
        f"sine=frequency=440:sample_rate={spec.audio_rate}:duration={float(spec.duration)}",
        format="lavfi",
    )
    packets: list[av.Packet[av.stream.Stream]] = []
    written = 0
    try:
        for frame in [*source.decode(audio=0), None]:
            for chunk in resampler.resample(frame):
                chunk.pts = written
                chunk.time_base = Fraction(1, spec.audio_rate)
                written += chunk.samples
                packets.extend(stream.encode(chunk))
    finally:
        source.close()
    packets.extend(stream.encode(None))
    if written != spec.expected_audio_samples:
        raise RuntimeError(f"{spec.name}: wrote {written} samples, expected {spec.expected_audio_samples}")
    return packets


def _packet_time(packet: av.Packet[av.stream.Stream]) -> Fraction:
    """Decode timestamp of a packet in seconds (for interleaving)."""
    ts = packet.dts if packet.dts is not None else packet.pts or 0
    return Fraction(ts) * Fraction(packet.time_base)


def _write_media(spec: MediaSpec, path: Path, container_options: dict[str, str] | None = None) -> None:
    """Encode ``spec`` into ``path`` (no caching)."""
    muxer = _CONTAINERS[spec.container][1]
    with av.open(str(path), "w", format=muxer, options=container_options or {}) as out:
        video = _add_video_stream(out, spec) if spec.video_codec else None
        audio = _add_audio_stream(out, spec) if spec.audio_channels else None
        packets: list[av.Packet[av.stream.Stream]] = []
        if video is not None:
            packets += _encode_video(video, spec)
        if audio is not None:
            packets += _encode_audio(audio, spec)
        packets.sort(key=_packet_time)
        for packet in packets:
            out.mux(packet)


def _atomic_create(path: Path, writer: WriterFn) -> Path:
    """Create ``path`` via ``writer(tmp_path)`` and an atomic rename; cached."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def default_cache_dir() -> Path:
    """Shared on-disk cache for generated media.

    ``$KINORAY_MEDIA_CACHE`` if set, else ``<tmp>/kinoray-test-media-v<N>``.
    Safe to share between concurrent test processes (atomic renames).
    """
    override = os.environ.get("KINORAY_MEDIA_CACHE")
    if override:
        return Path(override)
    return Path(tempfile.gettempdir()) / f"kinoray-test-media-v{GENERATOR_VERSION}"


def make_media(spec: MediaSpec, directory: Path) -> Path:
    """Generate the clip described by ``spec`` in ``directory``; return its path.

    Deterministic and cached: if the file for this exact spec already exists
    it is returned untouched.
    """
    return _atomic_create(Path(directory) / spec.file_name, lambda tmp: _write_media(spec, tmp))


def make_matrix(directory: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Generate every (or the named) :data:`MATRIX` clip; return name -> path."""
    chosen = names if names is not None else list(MATRIX)
    return {name: make_media(MATRIX[name], directory) for name in chosen}


# ----- the matrix ----------------------------------------------------------------


def _spec(name: str, description: str, **kwargs: object) -> tuple[str, MediaSpec]:
    """Build a ``(name, MediaSpec)`` pair for :data:`MATRIX`."""
    return name, MediaSpec(name=name, description=description, **kwargs)  # type: ignore[arg-type]


MATRIX: dict[str, MediaSpec] = dict(
    [
        _spec("h264_25fps", "H.264 High 320x180 25 fps, AAC stereo, MP4", fps=Fraction(25)),
        _spec("h264_2997fps", "H.264 29.97 (30000/1001) fps, AAC stereo, MP4", fps=Fraction(30000, 1001)),
        _spec("h264_30fps", "H.264 30 fps, AAC stereo, MP4 (baseline clip)", fps=Fraction(30)),
        _spec("h264_60fps", "H.264 60 fps, 4 s, AAC stereo, MP4", fps=Fraction(60), duration_s=Fraction(4)),
        _spec(
            "vfr",
            "H.264 VFR (gaps alternate 1/30, 2/30 s; time base 1/90000), MP4",
            fps=Fraction(30),
            vfr=True,
        ),
        _spec(
            "odd_dims",
            "MPEG-4 Part 2 321x181 yuv420p, no B-frames (odd dims; x264/x265 reject odd 4:2:0), MP4",
            width=321,
            height=181,
            video_codec="mpeg4",
            bframes=0,
            duration_s=Fraction(4),
        ),
        _spec(
            "odd_dims_h264_444",
            "H.264 High 4:4:4 321x181 yuv444p (odd dims), MKV",
            width=321,
            height=181,
            pix_fmt="yuv444p",
            container="mkv",
            duration_s=Fraction(4),
        ),
        _spec(
            "rotation_90",
            "H.264 320x180 with display matrix: rotate 90 deg clockwise (ffprobe: -90)",
            rotation=90,
        ),
        _spec(
            "rotation_270",
            "H.264 320x180 rotated 270 deg clockwise (ffprobe: 90)",
            rotation=270,
            duration_s=Fraction(3),
        ),
        _spec("portrait", "H.264 180x320 portrait pixels, no rotation", width=180, height=320),
        _spec(
            "anamorphic",
            "H.264 240x180 with SAR 4:3 (display 320x180)",
            width=240,
            sample_aspect=Fraction(4, 3),
        ),
        _spec("hevc_10bit", "HEVC Main 10 yuv420p10le, MP4", video_codec="hevc", pix_fmt="yuv420p10le"),
        _spec("h264_10bit", "H.264 High 10 yuv420p10le, MP4", pix_fmt="yuv420p10le", duration_s=Fraction(4)),
        _spec("no_audio", "H.264 video only, MP4", audio_channels=0),
        _spec("audio_51", "H.264 + AAC 5.1 (6 ch, layout 5.1), MP4", audio_channels=6),
        _spec("audio_44k", "H.264 + AAC stereo 44.1 kHz, MP4", audio_rate=44100),
        _spec(
            "long_gop",
            "H.264 160x90 25 fps 45 s, keyframe every 750 frames (30 s), MP4",
            width=160,
            height=90,
            fps=Fraction(25),
            duration_s=Fraction(45),
            gop=750,
            audio_channels=1,
        ),
        _spec(
            "hevc_open_gop",
            "HEVC open GOP (CRA keyframes after the first IDR), gop 30, MP4",
            video_codec="hevc",
            gop=30,
            bframes=3,
            open_gop=True,
        ),
        _spec(
            "hevc_closed_gop",
            "HEVC closed GOP (IDR keyframes), gop 30, MP4",
            video_codec="hevc",
            gop=30,
            bframes=3,
        ),
        _spec("h264_bpyramid", "H.264 3 B-frames with b-pyramid, gop 30, MP4", bframes=3, gop=30),
        _spec(
            "h264_open_gop",
            "H.264 open GOP (non-IDR I keyframes), gop 30, MP4",
            gop=30,
            bframes=3,
            open_gop=True,
        ),
        _spec("mkv", "H.264 + AAC in Matroska (1 ms timestamps)", container="mkv"),
        _spec("webm", "VP9 + Opus in WebM", container="webm", video_codec="vp9", duration_s=Fraction(4)),
        _spec("mov", "H.264 + AAC in QuickTime MOV", container="mov"),
        _spec("mpegts", "H.264 + AAC in MPEG-TS (video pts start at 2/30 s: B-frame delay)", container="ts"),
        _spec("av1", "AV1 (SVT-AV1) + AAC, MP4", video_codec="av1", duration_s=Fraction(3)),
        _spec("audio_only", "AAC stereo only, .m4a (ipod muxer)", container="m4a", video_codec=None),
    ]
)


# ----- bad inputs -------------------------------------------------------------------

#: Kinds accepted by :func:`make_bad_media` and their file extensions.
BAD_KINDS: dict[str, str] = {
    "truncated": "mp4",
    "truncated_faststart": "mp4",
    "truncated_ts": "ts",
    "corrupt": "mp4",
    "zero": "mp4",
    "text": "mp4",
    "absurd_dimensions": "y4m",
    "invalid_dimensions": "y4m",
    "no_video_frames": "mkv",
    "no_video_frames_mp4": "mp4",
    "garbage": "mkv",
}

_BAD_BASE = MediaSpec(name="bad_base", duration_s=Fraction(4))
_BAD_BASE_TS = MediaSpec(name="bad_base_ts", duration_s=Fraction(4), container="ts")
_SEED = 20240607


def _truncate(source: Path, fraction: float) -> WriterFn:
    """Writer copying the first ``fraction`` of ``source``'s bytes."""

    def write(tmp: Path) -> None:
        data = source.read_bytes()
        tmp.write_bytes(data[: int(len(data) * fraction)])

    return write


def _find_top_level_box(data: bytes, box_type: bytes) -> tuple[int, int]:
    """Return ``(payload_offset, payload_size)`` of the first top-level MP4 box."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
            header = 16
        elif size == 0:
            size = len(data) - offset
        if kind == box_type:
            return offset + header, size - header
        offset += size
    raise ValueError(f"no {box_type!r} box")


def _write_corrupt(source: Path) -> WriterFn:
    """Writer overwriting 4 KiB in the middle of ``source``'s mdat with random bytes."""

    def write(tmp: Path) -> None:
        data = bytearray(source.read_bytes())
        start, size = _find_top_level_box(bytes(data), b"mdat")
        run = min(4096, size // 4)
        middle = start + size // 2 - run // 2
        data[middle : middle + run] = random.Random(_SEED).randbytes(run)
        tmp.write_bytes(bytes(data))

    return write


def _write_y4m(width: int, height: int) -> WriterFn:
    """Writer for a YUV4MPEG2 file declaring ``width``x``height`` with one short FRAME."""

    def write(tmp: Path) -> None:
        header = f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode()
        tmp.write_bytes(header + b"FRAME\n" + bytes(1024))

    return write


def _write_no_video_frames(muxer: str, options: dict[str, str]) -> WriterFn:
    """Writer for a file with a declared H.264 stream but zero video packets.

    An AAC track with real packets is included; plain (non-fragmented) MP4
    would silently drop the empty track, hence fragmented MP4 for ``mp4``.
    """
    spec = MediaSpec(name="no_video_frames", duration_s=Fraction(2))

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format=muxer, options=options) as out:
            video = out.add_stream("libx264", rate=30, options=_x264_options(spec))
            video.width, video.height, video.pix_fmt = spec.width, spec.height, spec.pix_fmt
            audio = _add_audio_stream(out, spec)
            for packet in _encode_audio(audio, spec):
                out.mux(packet)

    return write


def _write_bytes(payload: bytes) -> WriterFn:
    """Writer producing exactly ``payload``."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(payload)

    return write


def _bad_writer(kind: str, directory: Path) -> WriterFn:
    """Return the writer function for a bad-media ``kind``."""
    if kind == "truncated":
        return _truncate(make_media(_BAD_BASE, directory), 0.4)
    if kind == "truncated_faststart":
        base = MediaSpec(name="bad_base_faststart", duration_s=Fraction(4))
        path = Path(directory) / base.file_name
        _atomic_create(path, lambda tmp: _write_media(base, tmp, {"movflags": "faststart"}))
        return _truncate(path, 0.4)
    if kind == "truncated_ts":
        return _truncate(make_media(_BAD_BASE_TS, directory), 0.4)
    if kind == "corrupt":
        return _write_corrupt(make_media(_BAD_BASE, directory))
    if kind == "zero":
        return _write_bytes(b"")
    if kind == "text":
        return _write_bytes(b"This is not a video file.\n" * 40)
    if kind == "absurd_dimensions":
        return _write_y4m(100_000, 2_000)
    if kind == "invalid_dimensions":
        return _write_y4m(100_000, 100_000)
    if kind == "no_video_frames":
        return _write_no_video_frames("matroska", {})
    if kind == "no_video_frames_mp4":
        return _write_no_video_frames("mp4", {"movflags": "frag_keyframe+empty_moov+default_base_moof"})
    if kind == "garbage":
        return _write_bytes(random.Random(_SEED).randbytes(64 * 1024))
    raise ValueError(f"unknown bad media kind {kind!r}; choose from {sorted(BAD_KINDS)}")


def make_bad_media(kind: str, directory: Path) -> Path:
    """Write a malformed input of ``kind`` (see :data:`BAD_KINDS`); return its path.

    * ``truncated``: valid MP4 (moov at the end) cut to 40 % of its bytes, so
      the moov atom is missing.
    * ``truncated_faststart``: as above but moov first, so it opens and the
      media data stops early.
    * ``truncated_ts``: valid MPEG-TS cut to 40 %.
    * ``corrupt``: valid MP4 with 4 KiB of seeded random bytes in mid-mdat.
    * ``zero``: empty ``.mp4``.  ``text``: plain text named ``.mp4``.
    * ``absurd_dimensions``: YUV4MPEG2 header declaring 100000x2000 (opens,
      reports that size, decodes no frame).
    * ``invalid_dimensions``: YUV4MPEG2 header declaring 100000x100000
      (rejected by FFmpeg's image size check at open).
    * ``no_video_frames``: Matroska with an H.264 track that has no packets
      (plus 2 s of AAC).  ``no_video_frames_mp4``: same as fragmented MP4.
    * ``garbage``: 64 KiB of seeded random bytes named ``.mkv``.
    """
    if kind not in BAD_KINDS:
        raise ValueError(f"unknown bad media kind {kind!r}; choose from {sorted(BAD_KINDS)}")
    path = Path(directory) / f"bad_{kind}-v{GENERATOR_VERSION}.{BAD_KINDS[kind]}"
    if path.exists():
        return path
    return _atomic_create(path, _bad_writer(kind, directory))


def copy_media(spec: MediaSpec, directory: Path, destination: Path) -> Path:
    """Copy a generated clip to ``destination`` (for tests that modify inputs)."""
    return Path(shutil.copyfile(make_media(spec, directory), destination))
