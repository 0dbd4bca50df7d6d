"""Live streaming: latency from the publisher to the playlist, per latency mode, and how many real-time ladders
one CPU core sustains.

    .venv/bin/python benchmarks/live.py            # ~2.5 minutes; table + benchmarks/results/live.json
    .venv/bin/python benchmarks/live.py --modes low --seconds 30 --per-core-seconds 0 [--heights 360]

**Latency** (loopback, on this machine): Debian's ``ffmpeg`` publishes ``testsrc2`` 1280x720 at 30 fps over
RTMP in real time (``-re``) to kinoray's ingest (``kinoray.live.rtmp``), which feeds the live ladder
(``kinoray.live.transcode``: 720p/480p/360p, libx264 ``veryfast``/zerolatency). The clock of the publisher's
frames is the earliest of every media tag's arrival less its timestamp (``TagPipe.clock``: a first tag that
waited on the publisher's encoder start would put it late); a segment is *listed* when the top rung's playlist
first names it (polled every 10 ms). Reported per mode:

- ``packaging``: listed − when its last frame was sent (median, p95): what kinoray adds;
- ``viewer``: packaging + 3 target durations, the live edge distance hls.js and Safari keep by default (HLS's
  hold-back), i.e. the glass-to-glass latency a default player shows, less the network;
- ``glass`` (``--glass``, on by default where Chromium is installed): measured, not added up — the publisher's
  wall clock is burned into its frames (``tests/live_clock.py``), Chromium plays the output with hls.js
  (``lowLatencyMode``, catching up at up to 1.5×) from a local server that answers LL-HLS blocking reloads as
  the edge does, and reads the clock in every frame it presents against the frame's display time (median over
  60 frames after 8 s of playback); beside it the same from ``EXT-X-PROGRAM-DATE-TIME`` (``hls.playingDate``).

``low`` is LL-HLS (``kinoray.live.llhls``): the same, per *part* (listed = the part's ``EXT-X-PART`` first seen,
which is when a blocking reload for it returns, less the edge's 20 ms poll), and ``viewer`` = packaging +
``PART-HOLD-BACK`` (3 part targets: where hls.js's ``lowLatencyMode`` and Safari hold the live edge).

Mux's published figures for the same modes: standard ~25–30 s, reduced ~12–20 s, low ~5 s
(``docs/ARCHITECTURE.md`` cites them).

**Ladders per core:** the same ladder transcoded from a 20 s recorded FLV as fast as one core allows
(``sched_setaffinity`` to one CPU, every encoder single-threaded); the real-time factor = media seconds per
wall second = how many such live streams one core carries. FFmpeg's CLI doing the same ladder on the same core
(one decode, three libx264 encodes with the same settings) is the peer. Beside it, the CPU seconds (process time)
one second of stream costs with every rung encoded and with the top rung passed through
(``source_passthrough="auto"``: the 720p rung is the source's own H.264, 480p/360p encoded).
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import RESULTS, percentile, write_json  # noqa: E402

from kinoray.live import PublishRequest, RtmpServer  # noqa: E402
from kinoray.live.pipe import TagPipe  # noqa: E402
from kinoray.live.transcode import LiveOptions, LiveTranscoder  # noqa: E402
from tests.live_clock import clock_source, glass_page, glass_to_glass  # noqa: E402

KEY = "benchmark-key"
MODES = {"low": 2.0, "reduced": 2.0, "standard": 4.0}
PART_SECONDS = 0.5  # low latency: kinoray's default (settings live.part_seconds)
HOLD_BACK_SEGMENTS = 3
_PART = re.compile(r'#EXT-X-PART:DURATION=([0-9.]+),URI="(part_[0-9.]+m4s)"')
SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i",
          "sine=frequency=440:sample_rate=48000"]
#: the publisher's picture with its wall clock burned in (tests/live_clock.py), for the glass-to-glass column
CLOCKED = ["-f", "lavfi", "-i", clock_source(1280, 720, 30), "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=48000"]
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "60", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k"]


class _Viewer(http.server.ThreadingHTTPServer):
    """The live output directory over HTTP for Chromium, as the edge serves it: a glass page, hls.js, and
    LL-HLS blocking reloads (``_HLS_msn``/``_HLS_part`` held until the playlist lists that part, a hinted part
    until it exists; 3 s at most) — a static server would make hls.js poll instead."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        from kinoray.player.assets import STATIC_DIR

        viewer = self
        self.root, self.measured = root, {}
        self.files = {"/hls.js": (STATIC_DIR / "hls.min.js").read_bytes(),
                      "/glass.html": glass_page("/master.m3u8").encode()}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path, _, query = self.path.partition("?")
                body = viewer.files.get(path)
                if body is None:
                    body = viewer.wait(path, dict(item.split("=", 1) for item in query.split("&") if "=" in item))
                self.send_response(200 if body is not None else 404)
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def wait(self, path: str, query: dict[str, str]) -> bytes | None:
        file = (self.root / path.lstrip("/")).resolve()
        if self.root.resolve() not in file.parents:
            return None
        deadline = time.monotonic() + 3
        part = f"part_{int(query['_HLS_msn']):05d}.{query.get('_HLS_part', '0')}.m4s" if "_HLS_msn" in query else ""
        while time.monotonic() < deadline:
            try:
                body = file.read_bytes()
            except OSError:
                body = None
            if body is not None and (not part or part.encode() in body or b"#EXT-X-ENDLIST" in body):
                return body
            time.sleep(0.02)
        return body

    def measure(self) -> None:
        try:
            self.measured = glass_to_glass(f"http://127.0.0.1:{self.server_address[1]}/glass.html", timeout=60)
            self.measured.pop("samples")
        except Exception as error:  # noqa: BLE001 - the column says why it is empty
            self.measured = {"error": f"{type(error).__name__}: {str(error)[:200]}"}


def latency(mode: str, segment: float, seconds: int, work: Path,
            heights: tuple[int, ...] = (720, 480, 360), glass: bool = False) -> dict[str, Any]:
    out = work / mode
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    state: dict[str, Any] = {}

    part = PART_SECONDS if mode == "low" else None

    async def authorize(request: PublishRequest) -> TagPipe | None:
        pipe = TagPipe()
        transcoder = LiveTranscoder(pipe, out, LiveOptions(segment_seconds=segment, encoder="libx264",
                                                           part_seconds=part, heights=heights))
        thread = threading.Thread(target=transcoder.run, daemon=True)
        thread.start()
        state.update(pipe=pipe, transcoder=transcoder, thread=thread)
        return pipe

    server = RtmpServer(authorize, host="127.0.0.1", port=0)
    port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    publisher = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", *CLOCKED, "-t",
                                  str(seconds), *X264, "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{KEY}"])
    viewer: _Viewer | None = None
    watching: threading.Thread | None = None
    listed: dict[str, float] = {}
    part_ends: dict[str, float] = {}  # part -> its media end (s), from the playlist's dates and durations
    playlist = out / f"{max(heights)}p" / "index.m3u8"
    first_date: float | None = None
    while publisher.poll() is None:
        if glass and viewer is None and (out / "master.m3u8").exists():
            viewer = _Viewer(out)
            watching = threading.Thread(target=viewer.measure, daemon=True)
            watching.start()
        if playlist.exists():
            now = time.time()
            text = playlist.read_text()
            for name in re.findall(r"seg_\d+\.m4s", text):
                listed.setdefault(name, now)
            if part is not None:
                first_date = _part_ends(text, listed, part_ends, now, first_date)
        time.sleep(0.01)
    state["thread"].join(60)
    seen: dict[str, Any] = {}
    if viewer is not None and watching is not None:
        watching.join(90)
        viewer.shutdown()
        viewer.server_close()
        seen = {"glass_clock_median_s": viewer.measured.get("clock"),
                "glass_dated_median_s": viewer.measured.get("dated"), "glass_error": viewer.measured.get("error")}
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    text = playlist.read_text()
    origin = state["pipe"].clock  # the publisher's clock: min over tags of arrival − FLV timestamp
    result = state["transcoder"].result
    if part is not None:
        delays = sorted(listed[name] - (origin + end) for name, end in part_ends.items())
        hold_back = float(re.search(r"PART-HOLD-BACK=([0-9.]+)", text)[1])  # type: ignore[index]
        return {"mode": mode, "segment_seconds": segment, "part_seconds": part, "heights": list(heights),
                "parts": len(delays),
                "error": result.error, "packaging_median_s": statistics.median(delays),
                "packaging_p95_s": percentile(delays, 95), "part_hold_back_s": hold_back,
                "viewer_median_s": statistics.median(delays) + hold_back, **seen}
    delays, media_end = [], 0.0
    for duration, name in re.findall(r"#EXTINF:([0-9.]+),\n(?:#EXT-X-PROGRAM-DATE-TIME:[^\n]*\n)?(seg_\d+\.m4s)",
                                     text):
        media_end += float(duration)
        if name in listed:
            delays.append(listed[name] - (origin + media_end))
    delays = sorted(delays[:-1])  # the last one is listed at the publisher's end, not when it filled
    return {"mode": mode, "segment_seconds": segment, "heights": list(heights), "segments": len(delays),
            "error": result.error,
            "packaging_median_s": statistics.median(delays), "packaging_p95_s": percentile(delays, 95),
            "viewer_median_s": statistics.median(delays) + HOLD_BACK_SEGMENTS * segment, **seen}


def _part_ends(text: str, listed: dict[str, float], ends: dict[str, float], now: float,
               first_date: float | None) -> float | None:
    """Note the parts ``text`` lists for the first time (at ``now``) and their media end: the segment's
    EXT-X-PROGRAM-DATE-TIME less segment 1's (media time 0), plus the parts up to it."""
    segment_start: float | None = None
    elapsed = 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            segment_start = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
            if first_date is None and "#EXT-X-MEDIA-SEQUENCE:1\n" in text:
                first_date = segment_start
            elapsed = 0.0
        elif (match := _PART.match(line)) and segment_start is not None and first_date is not None:
            elapsed += float(match[1])
            if match[2] not in listed:
                listed[match[2]] = now
                ends[match[2]] = segment_start - first_date + elapsed
    return first_date


def per_core(seconds: int, work: Path) -> dict[str, Any]:
    recorded = work / "source.flv"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *SOURCE, "-t", str(seconds), *X264,
                    str(recorded)], check=True)
    cpu = max(os.sched_getaffinity(0))
    original = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        pipe = TagPipe(max_bytes=1 << 30)
        pipe.write(recorded.read_bytes()[13:])  # the pipe writes its own FLV header
        pipe.ended(None)
        transcoder = LiveTranscoder(pipe, work / "per-core", LiveOptions(segment_seconds=2.0, encoder="libx264"))
        started, cpu_started = time.monotonic(), time.process_time()
        result = transcoder.run()
        ours, ours_cpu = time.monotonic() - started, time.process_time() - cpu_started
        # the same source (H.264, an IDR every 2 s) with the top rung passed through: 480p/360p encoded only
        pipe = TagPipe(max_bytes=1 << 30)
        pipe.write(recorded.read_bytes()[13:])
        pipe.ended(None)
        passed = LiveTranscoder(pipe, work / "per-core-passthrough", LiveOptions(
            segment_seconds=2.0, encoder="libx264", source_passthrough="auto"))
        started, cpu_started = time.monotonic(), time.process_time()
        passed_result = passed.run()
        ours_passed, passed_cpu = time.monotonic() - started, time.process_time() - cpu_started
        # the same with low latency's own LL-HLS packager instead of FFmpeg's HLS muxer
        pipe = TagPipe(max_bytes=1 << 30)
        pipe.write(recorded.read_bytes()[13:])
        pipe.ended(None)
        low = LiveTranscoder(pipe, work / "per-core-low", LiveOptions(segment_seconds=2.0, encoder="libx264",
                                                                      part_seconds=PART_SECONDS))
        started = time.monotonic()
        low_result = low.run()
        ours_low = time.monotonic() - started
        ladder = []
        for height, rate in ((720, "2500k"), (480, "1200k"), (360, "800k")):
            ladder += ["-map", "0:v", "-vf", f"scale=-2:{height}", "-c:v", "libx264", "-preset", "veryfast",
                       "-tune", "zerolatency", "-threads", "1", "-x264-params", "bframes=0:sliced-threads=0",
                       "-maxrate", rate, "-bufsize", rate, "-f", "null", "-"]
        started = time.monotonic()
        subprocess.run(["taskset", "-c", str(cpu), "ffmpeg", "-hide_banner", "-loglevel", "error", "-threads", "1",
                        "-i", str(recorded), *ladder], check=True)
        peer = time.monotonic() - started
    finally:
        os.sched_setaffinity(0, original)
    return {"media_seconds": seconds, "frames": result.frames_in, "error": result.error,
            "kinoray_wall_s": ours, "kinoray_realtime_factor": seconds / ours,
            "kinoray_cpu_s_per_stream_s": ours_cpu / seconds,
            "passthrough_rung": passed_result.passthrough, "passthrough_error": passed_result.error,
            "passthrough_wall_s": ours_passed, "passthrough_realtime_factor": seconds / ours_passed,
            "passthrough_cpu_s_per_stream_s": passed_cpu / seconds,
            "low_frames": low_result.frames_in, "low_parts": low_result.parts, "low_error": low_result.error,
            "kinoray_low_wall_s": ours_low, "kinoray_low_realtime_factor": seconds / ours_low,
            "ffmpeg_wall_s": peer, "ffmpeg_realtime_factor": seconds / peer, "ratio_vs_ffmpeg": peer / ours}


def _glass(row: dict[str, Any]) -> str:
    if row.get("glass_clock_median_s") is not None:
        return f"{row['glass_clock_median_s']:.2f} ({row['glass_dated_median_s']:.2f})"
    return str(row.get("glass_error") or "—")[:40]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=40, help="publishing time per latency mode")
    parser.add_argument("--per-core-seconds", type=int, default=20, help="0: skip the per-core measurement")
    parser.add_argument("--modes", nargs="*", choices=list(MODES), default=list(MODES),
                        help="latency modes to measure (a subset writes live-<modes>.json, not live.json)")
    parser.add_argument("--heights", type=int, nargs="+", default=[720, 480, 360],
                        help="the ladder of the latency runs (a lighter one measures packaging on a busy machine)")
    parser.add_argument("--glass", action=argparse.BooleanOptionalAction, default=None,
                        help="measure glass-to-glass in Chromium (default: where Chromium is installed)")
    args = parser.parse_args()
    if args.glass is None:
        from tests.browser import CHROMIUM

        args.glass = Path(CHROMIUM).exists()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="kinoray-live-bench-") as scratch:
        work = Path(scratch)
        modes = [latency(mode, MODES[mode], args.seconds, work, tuple(args.heights), args.glass)
                 for mode in args.modes]
        core = per_core(args.per_core_seconds, work) if args.per_core_seconds > 0 else None
    ladder = "/".join(f"{height}p" for height in args.heights)
    table = Table(title=f"live: publisher → playlist (loopback, {ladder} ladder, libx264 veryfast)")
    for column in ("mode", "segment s", "packaging median s", "packaging p95 s",
                   "viewer (+3 segments; low: +PART-HOLD-BACK) s",
                   "glass-to-glass s (burned-in clock; PDT)", "Mux documents"):
        table.add_column(column)
    documented = {"low": "~5 s", "reduced": "12–20 s", "standard": "25–30 s"}
    for row in modes:
        name = f"low (LL-HLS, {row['part_seconds']:g} s parts)" if row["mode"] == "low" else row["mode"]
        table.add_row(name, f"{row['segment_seconds']:g}", f"{row['packaging_median_s']:.2f}",
                      f"{row['packaging_p95_s']:.2f}", f"{row['viewer_median_s']:.1f}", _glass(row),
                      documented[row["mode"]])
    console.print(table)
    if core is not None:
        console.print(f"one core: kinoray {core['kinoray_realtime_factor']:.2f}× real time "
                      f"({core['frames']} frames in {core['kinoray_wall_s']:.1f} s) = live 720p/480p/360p ladders "
                      f"per core; FFmpeg CLI, same ladder and core: {core['ffmpeg_realtime_factor']:.2f}× "
                      f"(kinoray/ffmpeg {core['ratio_vs_ffmpeg']:.2f}); low latency (LL-HLS parts): "
                      f"{core['kinoray_low_realtime_factor']:.2f}×")
        console.print(f"CPU seconds per second of stream: every rung encoded {core['kinoray_cpu_s_per_stream_s']:.2f}, "
                      f"top rung ({core['passthrough_rung']}) passed through "
                      f"{core['passthrough_cpu_s_per_stream_s']:.2f} ({core['passthrough_realtime_factor']:.2f}× "
                      f"real time on the core)")
    whole = args.modes == list(MODES) and core is not None and args.heights == [720, 480, 360]
    name = "live.json" if whole else f"live-{'-'.join(args.modes) or 'per-core'}-{'-'.join(map(str, args.heights))}.json"
    write_json({"when": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                "loadavg": os.getloadavg(), "modes": modes, "per_core": core}, RESULTS / name, console)


if __name__ == "__main__":
    main()
