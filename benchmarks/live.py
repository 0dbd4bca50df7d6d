"""Live streaming: latency from the publisher to the playlist, per latency mode, and how many real-time ladders
one CPU core sustains.

    .venv/bin/python benchmarks/live.py            # ~2 minutes; table + benchmarks/results/live.json

**Latency** (loopback, on this machine): Debian's ``ffmpeg`` publishes ``testsrc2`` 1280x720 at 30 fps over
RTMP in real time (``-re``) to kinoray's ingest (``kinoray.live.rtmp``), which feeds the live ladder
(``kinoray.live.transcode``: 720p/480p/360p, libx264 ``veryfast``/zerolatency). The clock of the publisher's
frames is taken from the first media tag's arrival plus each tag's timestamp; a segment is *listed* when the
top rung's playlist first names it (polled every 10 ms). Reported per mode:

- ``packaging``: listed − when its last frame was sent (median, p95): what kinoray adds;
- ``viewer``: packaging + 3 target durations, the live edge distance hls.js and Safari keep by default (HLS's
  hold-back), i.e. the glass-to-glass latency a default player shows, less the network.

Mux's published figures for the same modes: standard ~25–30 s, reduced ~12–20 s (``docs/ARCHITECTURE.md``
cites them); ``low`` (LL-HLS parts) is not built yet and is reported as such.

**Ladders per core:** the same ladder transcoded from a 20 s recorded FLV as fast as one core allows
(``sched_setaffinity`` to one CPU, every encoder single-threaded); the real-time factor = media seconds per
wall second = how many such live streams one core carries. FFmpeg's CLI doing the same ladder on the same core
(one decode, three libx264 encodes with the same settings) is the peer.
"""

from __future__ import annotations

import argparse
import asyncio
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

from kinoray.live import FlvTag, PublishRequest, RtmpServer  # noqa: E402
from kinoray.live.pipe import TagPipe  # noqa: E402
from kinoray.live.transcode import LiveOptions, LiveTranscoder  # noqa: E402

KEY = "benchmark-key"
MODES = {"reduced": 2.0, "standard": 4.0}
HOLD_BACK_SEGMENTS = 3
SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i",
          "sine=frequency=440:sample_rate=48000"]
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "60", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k"]


class ClockedPipe(TagPipe):
    """A pipe that notes when the first media tag arrived (the publisher's clock origin)."""

    first_arrival: float | None = None

    def media(self, tag: FlvTag) -> None:
        if self.first_arrival is None and tag.kind != 18:
            self.first_arrival = time.time() - tag.timestamp / 1000
        super().media(tag)


def latency(mode: str, segment: float, seconds: int, work: Path) -> dict[str, Any]:
    out = work / mode
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    state: dict[str, Any] = {}

    async def authorize(request: PublishRequest) -> ClockedPipe | None:
        pipe = ClockedPipe()
        transcoder = LiveTranscoder(pipe, out, LiveOptions(segment_seconds=segment, encoder="libx264"))
        thread = threading.Thread(target=transcoder.run, daemon=True)
        thread.start()
        state.update(pipe=pipe, transcoder=transcoder, thread=thread)
        return pipe

    server = RtmpServer(authorize, host="127.0.0.1", port=0)
    port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    publisher = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", *SOURCE, "-t", str(seconds),
                                  *X264, "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{KEY}"])
    listed: dict[str, float] = {}
    playlist = out / "720p" / "index.m3u8"
    while publisher.poll() is None:
        if playlist.exists():
            now = time.time()
            for name in re.findall(r"seg_\d+\.m4s", playlist.read_text()):
                listed.setdefault(name, now)
        time.sleep(0.01)
    state["thread"].join(60)
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    text = playlist.read_text()
    origin = state["pipe"].first_arrival
    delays, media_end = [], 0.0
    for duration, name in re.findall(r"#EXTINF:([0-9.]+),\n(?:#EXT-X-PROGRAM-DATE-TIME:[^\n]*\n)?(seg_\d+\.m4s)",
                                     text):
        media_end += float(duration)
        if name in listed:
            delays.append(listed[name] - (origin + media_end))
    delays = sorted(delays[:-1])  # the last one is listed at the publisher's end, not when it filled
    result = state["transcoder"].result
    return {"mode": mode, "segment_seconds": segment, "segments": len(delays), "error": result.error,
            "packaging_median_s": statistics.median(delays), "packaging_p95_s": percentile(delays, 95),
            "viewer_median_s": statistics.median(delays) + HOLD_BACK_SEGMENTS * segment}


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
        started = time.monotonic()
        result = transcoder.run()
        ours = time.monotonic() - started
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
            "ffmpeg_wall_s": peer, "ffmpeg_realtime_factor": seconds / peer, "ratio_vs_ffmpeg": peer / ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=40, help="publishing time per latency mode")
    parser.add_argument("--per-core-seconds", type=int, default=20)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="kinoray-live-bench-") as scratch:
        work = Path(scratch)
        modes = [latency(mode, segment, args.seconds, work) for mode, segment in MODES.items()]
        core = per_core(args.per_core_seconds, work)
    table = Table(title="live: publisher → playlist (loopback, 720p/480p/360p ladder, libx264 veryfast)")
    for column in ("mode", "segment s", "packaging median s", "packaging p95 s", "viewer (≈ +3 segments) s",
                   "Mux documents"):
        table.add_column(column)
    documented = {"reduced": "12–20 s", "standard": "25–30 s"}
    for row in modes:
        table.add_row(row["mode"], f"{row['segment_seconds']:g}", f"{row['packaging_median_s']:.2f}",
                      f"{row['packaging_p95_s']:.2f}", f"{row['viewer_median_s']:.1f}", documented[row["mode"]])
    table.add_row("low (LL-HLS)", "—", "not built yet", "", "", "~5 s")
    console.print(table)
    console.print(f"one core: kinoray {core['kinoray_realtime_factor']:.2f}× real time "
                  f"({core['frames']} frames in {core['kinoray_wall_s']:.1f} s) = live 720p/480p/360p ladders "
                  f"per core; FFmpeg CLI, same ladder and core: {core['ffmpeg_realtime_factor']:.2f}× "
                  f"(kinoray/ffmpeg {core['ratio_vs_ffmpeg']:.2f})")
    write_json({"when": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(), "modes": modes,
                "per_core": core}, RESULTS / "live.json", console)


if __name__ == "__main__":
    main()
