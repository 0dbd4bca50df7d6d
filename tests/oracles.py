"""Independent oracles: facts about media files from the system FFmpeg CLI.

These helpers shell out to Debian's ``ffprobe``/``ffmpeg`` (FFmpeg 5.1 at
``/usr/bin``), never to PyAV, so they check kinoray's PyAV-based output with
a different FFmpeg build and code path.  Every helper raises
``AssertionError`` with the command line and stderr when the tool fails.

Times are exact :class:`fractions.Fraction` seconds (pts × time_base) and are
*absolute*: nothing is normalised to start at zero (MP4 with B-frames
starts at 0 thanks to its edit list; MPEG-TS starts at the B-frame delay,
or near 1.4 s when written by the ffmpeg CLI; AAC in MP4 starts at
-1024/rate because of encoder priming).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

__all__ = [
    "FFMPEG",
    "FFPROBE",
    "Packet",
    "audio_info",
    "codec_string_from_ffprobe",
    "count_frames",
    "count_packets",
    "decode_errors",
    "display_rotation",
    "ffprobe_json",
    "frame_pts",
    "idr_times",
    "keyframe_times",
    "nal_unit_types",
    "packets",
    "psnr",
    "stream_duration",
    "stream_info",
]

#: The oracle binaries (overridable through the environment).
FFPROBE: str = os.environ.get("KINORAY_ORACLE_FFPROBE", "/usr/bin/ffprobe")
FFMPEG: str = os.environ.get("KINORAY_ORACLE_FFMPEG", "/usr/bin/ffmpeg")

_TIMEOUT_S = 120

PathLike = str | Path


def _run(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; raise AssertionError with its stderr if ``check`` and it fails."""
    if shutil.which(cmd[0]) is None:
        raise AssertionError(f"oracle tool not found: {cmd[0]}")
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{Path(cmd[0]).name} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}"
        )
    return proc


def ffprobe_json(path_or_url: PathLike, *args: str) -> dict[str, Any]:
    """Run ``ffprobe -v error -of json <args> <path>`` and return the parsed JSON."""
    proc = _run([FFPROBE, "-v", "error", "-of", "json", *args, str(path_or_url)])
    try:
        data = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise AssertionError(f"ffprobe printed invalid JSON for {path_or_url}: {exc}") from exc
    if not isinstance(data, dict):
        raise AssertionError(f"ffprobe printed non-object JSON for {path_or_url}")
    return data


def _only_stream(data: dict[str, Any], path: PathLike, stream: str) -> dict[str, Any]:
    """The single stream entry of an ``-select_streams`` probe."""
    streams: list[dict[str, Any]] = data.get("streams") or []
    if len(streams) != 1:
        raise AssertionError(f"{path}: expected one stream for {stream!r}, ffprobe found {len(streams)}")
    return streams[0]


def stream_info(path: PathLike, stream: str = "v:0") -> dict[str, Any]:
    """ffprobe's ``-show_streams`` entry for one stream specifier."""
    data = ffprobe_json(path, "-show_streams", "-select_streams", stream)
    return _only_stream(data, path, stream)


def _time_base(path: PathLike, stream: str) -> Fraction:
    """The stream's time base as a Fraction."""
    data = ffprobe_json(path, "-select_streams", stream, "-show_entries", "stream=time_base")
    return Fraction(_only_stream(data, path, stream)["time_base"])


def count_frames(path: PathLike, stream: str = "v:0") -> int:
    """Number of frames ffprobe decodes from ``stream`` (``nb_read_frames``)."""
    data = ffprobe_json(
        path, "-count_frames", "-select_streams", stream, "-show_entries", "stream=nb_read_frames"
    )
    value = _only_stream(data, path, stream).get("nb_read_frames", "0")
    return int(value) if str(value).isdigit() else 0


def count_packets(path: PathLike, stream: str = "v:0") -> int:
    """Number of packets ffprobe demuxes from ``stream`` (``nb_read_packets``)."""
    data = ffprobe_json(
        path, "-count_packets", "-select_streams", stream, "-show_entries", "stream=nb_read_packets"
    )
    value = _only_stream(data, path, stream).get("nb_read_packets", "0")
    return int(value) if str(value).isdigit() else 0


def frame_pts(path: PathLike, stream: str = "v:0") -> list[Fraction]:
    """Presentation times (s) of decoded frames, in output order.

    Uses each frame's ``pts``, falling back to ``best_effort_timestamp``.
    """
    time_base = _time_base(path, stream)
    data = ffprobe_json(path, "-select_streams", stream, "-show_entries", "frame=pts,best_effort_timestamp")
    times: list[Fraction] = []
    for frame in data.get("frames", []):
        ts = frame.get("pts", frame.get("best_effort_timestamp"))
        if ts is None:
            raise AssertionError(f"{path}: a decoded frame of {stream} has no timestamp")
        times.append(int(ts) * time_base)
    return times


@dataclass(frozen=True)
class Packet:
    """One demuxed packet; times in seconds (None when absent)."""

    pts: Fraction | None
    dts: Fraction | None
    duration: Fraction | None
    size: int
    keyframe: bool


def _scaled(value: Any, time_base: Fraction) -> Fraction | None:
    """``value * time_base`` or None for a missing timestamp."""
    return None if value is None or value == "N/A" else int(value) * time_base


def packets(path: PathLike, stream: str = "v:0") -> list[Packet]:
    """All packets of ``stream`` in demux (decode) order."""
    time_base = _time_base(path, stream)
    data = ffprobe_json(
        path, "-select_streams", stream, "-show_entries", "packet=pts,dts,duration,size,flags"
    )
    return [
        Packet(
            pts=_scaled(pkt.get("pts"), time_base),
            dts=_scaled(pkt.get("dts"), time_base),
            duration=_scaled(pkt.get("duration"), time_base),
            size=int(pkt.get("size", 0)),
            keyframe="K" in pkt.get("flags", ""),
        )
        for pkt in data.get("packets", [])
    ]


def keyframe_times(path: PathLike, stream: str = "v:0") -> list[Fraction]:
    """Times (s) of packets flagged K (container sync samples), sorted by pts."""
    return sorted(_packet_time(pkt) for pkt in packets(path, stream) if pkt.keyframe)


def _packet_time(pkt: Packet) -> Fraction:
    """A packet's pts, or its dts when it has no pts."""
    ts = pkt.pts if pkt.pts is not None else pkt.dts
    if ts is None:
        raise AssertionError("packet without pts and dts")
    return ts


def idr_times(path: PathLike, stream: str = "v:0") -> list[Fraction]:
    """Times (s) of decoded frames with ``pict_type=I`` and ``key_frame=1``.

    This is frame-level and decoder-defined: HEVC CRA frames count too (they
    are IRAP).  Use :func:`nal_unit_types` to tell IDR from CRA.
    """
    time_base = _time_base(path, stream)
    data = ffprobe_json(
        path,
        "-select_streams",
        stream,
        "-show_entries",
        "frame=pts,best_effort_timestamp,key_frame,pict_type",
    )
    times: list[Fraction] = []
    for frame in data.get("frames", []):
        if int(frame.get("key_frame", 0)) == 1 and frame.get("pict_type") == "I":
            ts = frame.get("pts", frame.get("best_effort_timestamp"))
            times.append(int(ts) * time_base)
    return sorted(times)


def stream_duration(path: PathLike, stream: str = "v:0") -> Fraction:
    """Span of ``stream`` from its packets: max(pts + duration) − min(pts), in s.

    A packet without a duration (ffprobe 5.1 reports none for MP4 tracks
    whose ``stts`` is irregular, i.e. VFR) is given the gap to the next
    packet in presentation order; the last such packet reuses the previous
    gap.
    """
    ordered = sorted(packets(path, stream), key=_packet_time)
    if not ordered:
        raise AssertionError(f"{path}: no packets in {stream}")
    times = [_packet_time(pkt) for pkt in ordered]
    durations = [pkt.duration for pkt in ordered]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    gaps.append(gaps[-1] if gaps else Fraction(0))
    ends = [start + (dur if dur else gap) for start, dur, gap in zip(times, durations, gaps, strict=True)]
    return max(ends) - times[0]


def decode_errors(path_or_url: PathLike) -> str:
    """stderr of ``ffmpeg -v error -i X -f null -`` ('' when it decodes cleanly).

    Never raises for a bad input: a file ffmpeg cannot open yields its error
    text (or ``"exit N"`` if ffmpeg failed silently).
    """
    proc = _run(
        [FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-i", str(path_or_url), "-f", "null", "-"],
        check=False,
    )
    errors = proc.stderr.strip()
    if proc.returncode != 0 and not errors:
        return f"exit {proc.returncode}"
    return errors


_PSNR_RE = re.compile(r"PSNR y:(?P<y>\S+) u:(?P<u>\S+) v:(?P<v>\S+) average:(?P<average>\S+)")


def _parse_psnr(value: str) -> float:
    """Parse one PSNR figure ('inf' for identical input)."""
    return math.inf if value.startswith("inf") else float(value)


def psnr(
    distorted: PathLike,
    reference: PathLike,
    *,
    scale_to: tuple[int, int] | None = None,
    component: str = "average",
    pix_fmt: str = "yuv420p",
    shortest: bool = False,
) -> float:
    """Mean PSNR (dB) of ``distorted`` against ``reference`` via ffmpeg's psnr filter.

    Both inputs are auto-rotated by ffmpeg (display matrix applied), their
    timestamps reset to start at 0 and converted to ``pix_fmt``.  Without
    ``scale_to`` the distorted video is scaled (bicubic) to the reference's
    decoded and rotated size; with ``scale_to=(w, h)`` both are scaled to it.
    ``component`` is 'y', 'u', 'v' or 'average'.  With ``shortest`` the
    comparison stops at the end of the shorter input (otherwise ffmpeg's
    framesync repeats the last frame of the shorter one).  Returns
    ``math.inf`` for identical pictures.
    """
    if component not in ("y", "u", "v", "average"):
        raise ValueError(f"component must be y, u, v or average, not {component!r}")
    width, height = scale_to or _display_size(reference)
    prep = f"scale={width}:{height}:flags=bicubic,format={pix_fmt},setsar=1,setpts=PTS-STARTPTS"
    ref_prep = prep if scale_to else f"format={pix_fmt},setsar=1,setpts=PTS-STARTPTS"
    graph = f"[0:v:0]{prep}[d];[1:v:0]{ref_prep}[r];[d][r]psnr=shortest={int(shortest)}"
    proc = _run(
        [
            FFMPEG,
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-v",
            "info",
            "-i",
            str(distorted),
            "-i",
            str(reference),
            "-filter_complex",
            graph,
            "-an",
            "-sn",
            "-f",
            "null",
            "-",
        ]
    )
    match = _PSNR_RE.search(proc.stderr)
    if match is None:
        raise AssertionError(f"no PSNR line in ffmpeg output:\n{proc.stderr[-2000:]}")
    return _parse_psnr(match.group(component))


def _display_size(path: PathLike) -> tuple[int, int]:
    """Decoded size after ffmpeg's autorotation (width and height swapped for ±90°)."""
    info = stream_info(path, "v:0")
    width, height = int(info["width"]), int(info["height"])
    rotation = display_rotation(path)
    return (height, width) if rotation is not None and abs(rotation) % 180 == 90 else (width, height)


def display_rotation(path: PathLike, stream: str = "v:0") -> int | None:
    """ffprobe's display-matrix ``rotation`` (counter-clockwise degrees) or None."""
    for side_data in stream_info(path, stream).get("side_data_list", []):
        if "rotation" in side_data:
            return int(side_data["rotation"])
    return None


def codec_string_from_ffprobe(path: PathLike) -> dict[str, Any]:
    """Codec facts of ``v:0``: codec_name, profile, level, codec_tag_string, pix_fmt, width, height."""
    info = stream_info(path, "v:0")
    keys = ("codec_name", "profile", "level", "codec_tag_string", "pix_fmt", "width", "height")
    return {key: info.get(key) for key in keys}


def audio_info(path: PathLike, stream: str = "a:0") -> dict[str, Any]:
    """Audio facts: codec_name, profile, sample_rate (int), channels, channel_layout."""
    info = stream_info(path, stream)
    return {
        "codec_name": info.get("codec_name"),
        "profile": info.get("profile"),
        "sample_rate": int(info.get("sample_rate", 0)),
        "channels": int(info.get("channels", 0)),
        "channel_layout": info.get("channel_layout"),
    }


_TRACE_PACKET_RE = re.compile(
    r"\[trace_headers @ [^\]]+\] Packet: \d+ bytes(?P<key>, key frame)?, pts (?P<pts>-?\d+|N/A)"
)
_TRACE_NAL_RE = re.compile(r"\[trace_headers @ [^\]]+\] nal_unit_type: (?P<type>\d+)\(")


def nal_unit_types(path: PathLike, stream: str = "v:0") -> list[tuple[Fraction | None, bool, list[int]]]:
    """Per packet (decode order): ``(pts seconds, K flag, [NAL unit types])``.

    H.264/HEVC only, via ``ffmpeg -bsf:v trace_headers``.  HEVC types: 19/20
    IDR, 21 CRA, 16-18 BLA, 0-9 non-IRAP slices; H.264: 5 IDR, 1 non-IDR.
    Parameter-set NALs sent in extradata are not listed.
    """
    time_base = _time_base(path, stream)
    proc = _run(
        [
            FFMPEG,
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-v",
            "debug",
            "-i",
            str(path),
            "-map",
            f"0:{stream}",
            "-c",
            "copy",
            "-bsf:v",
            "trace_headers",
            "-f",
            "null",
            "-",
        ]
    )
    result: list[tuple[Fraction | None, bool, list[int]]] = []
    for line in proc.stderr.splitlines():
        packet = _TRACE_PACKET_RE.search(line)
        if packet:
            pts = packet.group("pts")
            time = None if pts == "N/A" else int(pts) * time_base
            result.append((time, packet.group("key") is not None, []))
            continue
        nal = _TRACE_NAL_RE.search(line)
        if nal and result:
            result[-1][2].append(int(nal.group("type")))
    if not result:
        raise AssertionError(f"{path}: trace_headers printed no packets")
    return result


def decoded_audio_seconds(path: PathLike, stream: str = "a:0") -> Fraction:
    """Duration of the audio as ffmpeg actually plays it (edit lists and encoder priming applied): the
    decoded samples counted from a 16-bit mono WAV render, divided by the sample rate."""
    rate = int(audio_info(path, stream)["sample_rate"])
    proc = subprocess.run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-ac", "1",
         "-c:a", "pcm_s16le", "-f", "s16le", "-"],
        capture_output=True, check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"ffmpeg could not decode {path}: {proc.stderr.decode(errors='replace')}")
    return Fraction(len(proc.stdout) // 2, rate)
