"""kinoray's chunked ladder transcode on Ray vs the Debian ``ffmpeg`` CLI doing the same ladder in one process.

Both get the same generated 1080p30 input (testsrc2 panned by a moving crop, with strong temporal grain:
global motion, and texture that survives down to the smallest rung) and produce the same 4-rung H.264 ladder as HLS fMP4:
libx264 preset veryfast, CRF 23, maxrate = rung cap, bufsize = 2 × maxrate, closed fixed GOP of one 4 s
segment (keyint = min-keyint = 120 at 30 fps, scenecut 0, open-gop 0), 3 B-frames, bicubic scaling, AAC
128 kb/s stereo encoded once (ffmpeg: one separate audio rendition in an ``agroup``, like kinoray's).

    .venv/bin/python benchmarks/transcode_vs_ffmpeg.py            # 60 s input, memory runs at 1x and 10x
    .venv/bin/python benchmarks/transcode_vs_ffmpeg.py --quick    # 10 s input, long factor 3 (~2 min)

Prints a table and writes JSON (default ``benchmarks/results/transcode_vs_ffmpeg.json``; inputs are cached
and outputs kept under ``benchmarks/results/transcode_vs_ffmpeg/``). Every measured run happens in a fresh
process (kinoray: a fresh driver with a fresh local Ray), so no run inherits another's memory.

Definitions (also written into the JSON):

* wall: kinoray = ``TranscodeJob.run()`` on a running Ray (a long-lived cluster, which is how the product
  runs; the job starts and probes its own encoder actors, which is counted); ``wall_cold_s`` adds ``ray.init``.
  ffmpeg = the CLI process from exec to exit. wall ratio = kinoray wall ÷ ffmpeg wall (target ≤ 0.95); with
  ``--repeats N`` the median over N pairs in alternating order. Each kinoray run then runs the same job once
  more in the same driver, on the actors the first job kept (what a running service does for its next upload):
  ``wall_ratio_warm_workers``.
* CPU seconds: ffmpeg = its rusage (``os.wait4``). kinoray = CPU of the driver + Ray worker processes over
  the timed call, read from ``/proc/<pid>/stat`` of the driver's process tree (sampled every 0.2 s, plus
  snapshots at start and end; the sampler's own CPU is subtracted); Ray's daemons (raylet, GCS, agents)
  are reported separately as ``ray_daemon_cpu_s``.
* CPU efficiency = (CPU seconds of a 1-thread encode of the ladder) ÷ (wall × cores). The numerator is
  the same for both systems: kinoray's pipeline run in one process with ``sequential_executor``, as one
  chunk, 1 decoder thread and 1 thread per x264 encoder (its ``encode_cpu_seconds``: decode + scale + 4
  encodes, no chunking overhead, no audio). 1.0 means all cores did nothing but the minimal serial work.
  ``core_utilisation`` = own CPU seconds ÷ (wall × cores) shows how busy each kept the cores, whatever
  the work. With ``--ffmpeg-serial`` the CLI is also timed single-threaded (its own 1-thread cost).
* peak RSS: ffmpeg = ``ru_maxrss``. kinoray = peak over samples of the summed RSS of driver + Ray workers
  (``peak_rss_sum_mb``; shared pages count once per process, so PSS, sampled every 2 s, is given too), the largest
  single process (``peak_rss_single_mb``) and, for information, the sum including Ray's daemons.
* PSNR per rung (ffmpeg ``psnr`` filter, mean MSE over all frames → dB, Y and YUV-average) against the
  source scaled straight to the rung with ``scale=W:H:flags=bicubic`` — the same reference for both.
  kinoray scales in cascade (1080→720→480→360), so ``psnr_vs_cascade_ref`` also gives its PSNR against a
  cascaded bicubic reference, which separates encoder quality from the scaling choice. kinoray's rung is
  read through its ``index.m3u8`` (init + segments), ffmpeg's through its variant playlist.
* memory flatness: kinoray on a 640x360 input, ladder (360, 240), at 1× and N× (``--long-factor``) the
  main duration; target peak summed RSS < 1 GB and the N× peak within 20 % of the 1× peak.
* load: ``os.getloadavg()`` at the start and before each phase, and ``foreign_cpu_s`` per timed phase =
  machine-wide busy CPU (``/proc/stat``) minus the CPU the measured system used: CPU other programs took.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FPS = 30
SEGMENT_S = 4
CHUNK_S = 20
PRESET = "veryfast"
CRF = 23
BFRAMES = 3
AUDIO_BITRATE = 128_000
LADDER = (1080, 720, 480, 360)
SMALL_LADDER = (360, 240)
SIZES = {1080: (1920, 1080), 720: (1280, 720), 480: (854, 480), 360: (640, 360), 240: (426, 240)}
CAPS = {1080: 5_000_000, 720: 3_000_000, 480: 1_400_000, 360: 800_000, 240: 400_000}
# testsrc2 (bars, moving line, checkerboard, counter) rendered 4/3 larger and panned by a moving crop (global
# camera-like motion), with strong uniform temporal noise (grain: texture and residual in every frame and every
# rung). Cheap to render. The 1080p rung lands at its VBV cap, the small rungs keep real detail.
PATTERN = ("testsrc2=size={cw}x{ch}:rate={fps},crop={w}:{h}:x='{ax}+{mx}*sin(t/2)':y='{ay}+{my}*sin(t/3)',"
           "noise=alls=12:allf=t+u")
SOURCE_PRESET, SOURCE_CRF = "ultrafast", 23  # the mezzanine: ~30 Mb/s at 1080p, GOP 250 (x264 default)

TARGET_WALL_RATIO = 0.95
TARGET_PEAK_RSS_MB = 1024
TARGET_FLATNESS = 1.20
QUIET_SHARE = 0.05  # foreign CPU above this share of the measured CPU marks a timed phase as disturbed
SAMPLE_S = 0.2
FULL_EVERY = 10  # samples: new processes and PSS are picked up every 2 s

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DAEMON_TITLES = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


# --------------------------------------------------------------------------------------------- /proc


def _stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, cpu seconds, rss bytes) of one process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    fields = raw.rsplit(b")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[21]) * PAGE


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            for line in handle:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _tree_stats(root: int) -> dict[int, tuple[float, int]]:
    """{pid: (cpu s, rss bytes)} for ``root`` and all its descendants."""
    stats: dict[int, tuple[int, float, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                stats[int(entry)] = found
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = {}, [root]
    while stack:
        pid = stack.pop()
        if pid in stats:
            out[pid] = stats[pid][1:]
        stack.extend(children.get(pid, ()))
    return out


def _busy_cpu_seconds() -> float:
    """Machine-wide non-idle CPU seconds since boot (all cores)."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class TreeSampler:
    """Samples CPU and RSS of this process's tree every ``SAMPLE_S``; classifies driver / Ray worker / daemon."""

    def __init__(self) -> None:
        self.root = os.getpid()
        self.roles: dict[int, str] = {}
        self.base_cpu: dict[int, float] = {}
        self.last_cpu: dict[int, float] = {}
        self.peak = {"sum": 0, "single": 0, "driver": 0, "worker": 0, "all": 0, "pss_sum": 0}
        self.samples = 0
        self.pids: set[int] = set()
        self.sampler_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tree-sampler")

    def _role(self, pid: int) -> str:
        role = self.roles.get(pid)
        if role is None:
            cmd = _cmdline(pid)
            if pid == self.root:
                role = "driver"
            elif "default_worker.py" in cmd or (cmd.startswith("ray::") and not cmd.startswith(DAEMON_TITLES)):
                role = "worker"
            else:
                role = "daemon"
            self.roles[pid] = role
        return role

    def _stats(self, full: bool) -> dict[int, tuple[float, int]]:
        """Walk all of /proc for new processes on full samples; otherwise re-read the known tree only."""
        if full:
            stats = _tree_stats(self.root)
            self.pids = set(stats)
            return stats
        stats = {}
        for pid in self.pids:
            found = _stat(pid)
            if found is not None:
                stats[pid] = found[1:]
        return stats

    def sample(self, full: bool = False) -> None:
        # A full sample (all of /proc, and PSS from smaps_rollup: ~5 ms per process) every FULL_EVERY-th
        # time keeps the sampler near 1 % of a core; RSS and CPU of known processes are read every time.
        full = full or self.samples % FULL_EVERY == 0
        stats = self._stats(full)
        total = everything = pss = 0
        for pid, (cpu, rss) in stats.items():
            role = self._role(pid)
            self.last_cpu[pid] = cpu
            everything += rss
            if role == "daemon":
                continue
            total += rss
            pss += _pss(pid) if full else 0
            self.peak["single"] = max(self.peak["single"], rss)
            self.peak[role] = max(self.peak[role], rss)
        self.peak["sum"] = max(self.peak["sum"], total)
        self.peak["all"] = max(self.peak["all"], everything)
        if full:
            self.peak["pss_sum"] = max(self.peak["pss_sum"], pss)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()
        self.sampler_cpu = time.thread_time()

    def __enter__(self) -> TreeSampler:
        self.sample()
        self.base_cpu = dict(self.last_cpu)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample(full=True)

    def cpu(self) -> dict[str, float]:
        out = {"driver": 0.0, "worker": 0.0, "daemon": 0.0}
        for pid, cpu in self.last_cpu.items():
            out[self.roles[pid]] += cpu - self.base_cpu.get(pid, 0.0)
        out["driver"] = max(0.0, out["driver"] - self.sampler_cpu)
        return out


# ------------------------------------------------------------------------------------- child processes


def _options(spec: dict[str, Any]) -> Any:
    from kinoray.media import TranscodeOptions

    return TranscodeOptions(codec="h264", ladder=tuple(spec["ladder"]), segment_seconds=SEGMENT_S,
                            chunk_seconds=spec["chunk_seconds"], preset=PRESET, quality=CRF, threads=1,
                            decoder="cpu", audio_bitrate=AUDIO_BITRATE)


def _renditions(result: Any) -> dict[str, Any]:
    return {r.name: {"width": r.width, "height": r.height, "bytes": r.bytes, "bandwidth": r.bandwidth,
                     "average_bandwidth": r.average_bandwidth, "segments": r.segments}
            for r in result.renditions}


def child_ray(spec: dict[str, Any]) -> dict[str, Any]:
    """One kinoray transcode on a fresh local Ray with ``cores`` CPUs, measured over its process tree."""
    import ray

    from kinoray.cluster import TranscodeJob, ensure_ray
    from kinoray.settings import ClusterSettings, Settings

    shutil.rmtree(spec["out"], ignore_errors=True)
    started = time.perf_counter()
    ensure_ray(spec["cores"])
    ray_start = time.perf_counter() - started
    settings = Settings().model_copy(update={"cluster": ClusterSettings(max_workers=spec["cores"])})
    load = os.getloadavg()
    with TreeSampler() as sampler:
        busy0 = _busy_cpu_seconds()
        t0 = time.perf_counter()
        result = TranscodeJob(spec["source"], spec["out"], _options(spec), settings=settings).run()
        wall = time.perf_counter() - t0
        busy = _busy_cpu_seconds() - busy0
    cpu = sampler.cpu()
    warm = None
    if spec.get("warm"):
        # The same job again in this driver: it takes over the first job's actors (kept for the next job),
        # as a running service does for its next upload.
        t0 = time.perf_counter()
        warm_result = TranscodeJob(spec["source"], spec["out"] + "_warm", _options(spec), settings=settings).run()
        warm = {"wall_s": time.perf_counter() - t0, "stage_seconds": warm_result.stage_seconds}
        shutil.rmtree(spec["out"] + "_warm", ignore_errors=True)
    ray.shutdown()
    own = cpu["driver"] + cpu["worker"]
    return {
        "wall_s": wall, "wall_cold_s": wall + ray_start, "ray_start_and_warmup_s": ray_start,
        "warm_workers": warm,
        "loadavg_before": load,
        "cpu_s": own, "driver_cpu_s": cpu["driver"], "worker_cpu_s": cpu["worker"],
        "ray_daemon_cpu_s": cpu["daemon"], "sampler_cpu_s": sampler.sampler_cpu, "samples": sampler.samples,
        "foreign_cpu_s": max(0.0, busy - own - cpu["daemon"] - sampler.sampler_cpu),
        "encode_cpu_s": result.encode_cpu_seconds, "chunks": result.chunks, "frames": result.frames,
        "duration_s": result.duration_seconds, "chunk_stats": result.chunk_stats,
        "stage_seconds": getattr(result, "stage_seconds", None),
        "peak_rss_sum_mb": sampler.peak["sum"] / 2**20, "peak_pss_sum_mb": sampler.peak["pss_sum"] / 2**20,
        "peak_rss_single_mb": sampler.peak["single"] / 2**20,
        "peak_rss_driver_mb": sampler.peak["driver"] / 2**20,
        "peak_rss_worker_max_mb": sampler.peak["worker"] / 2**20,
        "peak_rss_incl_ray_daemons_mb": sampler.peak["all"] / 2**20,
        "renditions": _renditions(result),
    }


def child_serial(spec: dict[str, Any]) -> dict[str, Any]:
    """kinoray's pipeline in this one process (sequential executor, one chunk, 1 thread per codec)."""
    from kinoray.media import sequential_executor, transcode_file

    shutil.rmtree(spec["out"], ignore_errors=True)
    profiler = cProfile.Profile(time.process_time) if spec.get("profile") else None  # CPU, not wall
    before = os.times()
    t0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = transcode_file(spec["source"], spec["out"], _options(spec), executor=sequential_executor)
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - t0
    after = os.times()
    out: dict[str, Any] = {
        "wall_s": wall, "process_cpu_s": (after.user + after.system) - (before.user + before.system),
        "encode_cpu_s": result.encode_cpu_seconds, "chunks": result.chunks, "frames": result.frames,
        "stage_seconds": getattr(result, "stage_seconds", None), "renditions": _renditions(result),
    }
    if profiler is not None:
        profiler.dump_stats(spec["profile"])
        out["profile_top"] = _profile_top(spec["profile"])
    return out


def _profile_top(path: str, limit: int = 25) -> list[dict[str, Any]]:
    stats = pstats.Stats(path)
    rows = []
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(filename).name}:{line}:{name}", "calls": calls,
                     "tottime_s": round(tottime, 3), "cumtime_s": round(cumtime, 3)})
    return sorted(rows, key=lambda row: row["tottime_s"], reverse=True)[:limit]


def run_child(mode: str, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run a child mode of this script in a fresh interpreter; returns its JSON plus its rusage."""
    result_path = work / f".child-{mode}-{os.getpid()}.json"
    spec = {**spec, "result": str(result_path)}
    busy0 = _busy_cpu_seconds()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--_child", mode, json.dumps(spec)],
                            cwd=str(ROOT))
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    busy = _busy_cpu_seconds() - busy0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child {mode} failed with status {status}")
    data = json.loads(result_path.read_text())
    result_path.unlink()
    data["child_rusage"] = {"cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_mb": usage.ru_maxrss / 1024,
                            "elapsed_s": elapsed, "machine_busy_cpu_s": busy}
    return data


# ----------------------------------------------------------------------------------------------- ffmpeg


def ffmpeg_ladder_command(source: Path, out: Path, *, serial: bool = False) -> list[str]:
    n = len(LADDER)
    graph = f"[0:v]split={n}" + "".join(f"[v{i}]" for i in range(n)) + ";" + ";".join(
        f"[v{i}]scale={SIZES[h][0]}:{SIZES[h][1]}:flags=bicubic[o{i}]" for i, h in enumerate(LADDER))
    gop = math.floor(SEGMENT_S * FPS)
    x264 = f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:bframes={BFRAMES}"
    if serial:
        x264 += ":threads=1:sliced-threads=0:lookahead-threads=1"
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    if serial:
        cmd += ["-threads", "1", "-filter_complex_threads", "1"]
    cmd += ["-i", str(source), "-filter_complex", graph]
    for i in range(n):
        cmd += ["-map", f"[o{i}]"]
    cmd += ["-map", "0:a:0", "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-pix_fmt", "yuv420p",
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", str(BFRAMES),
            "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_S})", "-forced-idr", "1", "-x264-params", x264]
    if serial:
        cmd += ["-threads:v", "1"]
    for i, h in enumerate(LADDER):
        cmd += [f"-maxrate:v:{i}", str(CAPS[h]), f"-bufsize:v:{i}", str(2 * CAPS[h])]
    cmd += ["-c:a", "aac", "-b:a", str(AUDIO_BITRATE), "-ac", "2",
            "-f", "hls", "-hls_time", str(SEGMENT_S), "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
            "-hls_flags", "independent_segments", "-master_pl_name", "master.m3u8",
            "-var_stream_map", " ".join(f"v:{i},agroup:aud" for i in range(n)) + " a:0,agroup:aud",
            "-hls_segment_filename", str(out / "v%v" / "seg_%05d.m4s"), str(out / "v%v" / "index.m3u8")]
    return cmd


def run_ffmpeg(source: Path, out: Path, *, serial: bool = False) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = ffmpeg_ladder_command(source, out, serial=serial)
    load = os.getloadavg()
    busy0 = _busy_cpu_seconds()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    busy = _busy_cpu_seconds() - busy0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ffmpeg failed ({status}): {' '.join(cmd)}")
    cpu = usage.ru_utime + usage.ru_stime
    renditions = {}
    for i, h in enumerate(LADDER):
        files = [p for p in (out / f"v{i}").iterdir() if p.suffix in (".mp4", ".m4s")]
        renditions[f"{h}p"] = {"width": SIZES[h][0], "height": SIZES[h][1],
                               "bytes": sum(p.stat().st_size for p in files),
                               "segments": sum(p.suffix == ".m4s" for p in files)}
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": usage.ru_maxrss / 1024, "loadavg_before": load,
            "foreign_cpu_s": max(0.0, busy - cpu), "command": subprocess.list2cmdline(cmd),
            "renditions": renditions}


# ------------------------------------------------------------------------------------------------- PSNR


def measure_psnr(source: Path, work: Path, kinoray_out: Path, ffmpeg_out: Path, seconds: float | None) -> dict:
    """One ffmpeg pass: the source is decoded once and scaled to every rung (straight and, for kinoray's own
    chain, in cascade); each rendition, read through its playlist, is compared with the psnr filter."""
    stats_dir = work / "psnr"
    shutil.rmtree(stats_dir, ignore_errors=True)
    stats_dir.mkdir(parents=True)
    limit = ["-t", f"{seconds:g}"] if seconds else []
    n = len(LADDER)
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *limit, "-i", str(source)]
    graph = [f"[0:v]setpts=PTS-STARTPTS,format=yuv420p,split={n + 1}" + "".join(f"[s{i}]" for i in range(n))
             + "[c]"]
    chain = "[c]"
    for i, h in enumerate(LADDER):
        w, hh = SIZES[h]
        graph.append(f"[s{i}]scale={w}:{hh}:flags=bicubic,format=yuv420p,split=2[rk{i}][rf{i}]")
        # the cascade 1080 -> 720 -> 480 -> 360, as kinoray's RenditionScaler does it
        nxt = f"[c{i}]" if i + 1 < n else ""
        graph.append(f"{chain}scale={w}:{hh}:flags=bicubic,format=yuv420p" +
                     (f",split=2[rc{i}]{nxt}" if nxt else f"[rc{i}]"))
        chain = nxt
    jobs: list[tuple[str, str, str]] = []  # (system, rung, reference)
    number = 0
    for system, out_dir, playlist in (("kinoray", kinoray_out, "{h}p/index.m3u8"),
                                      ("ffmpeg", ffmpeg_out, "v{i}/index.m3u8")):
        for i, h in enumerate(LADDER):
            number += 1
            cmd += [*limit, "-i", str(out_dir / playlist.format(h=h, i=i))]
            label = f"{system[0]}{i}"
            references = [("direct", f"r{system[0]}{i}")] + ([("cascade", f"rc{i}")] if system == "kinoray" else [])
            graph.append(f"[{number}:v]setpts=PTS-STARTPTS,format=yuv420p,split={len(references)}"
                         + "".join(f"[d{label}{ref}]" for ref, _ in references))
            for ref, pad in references:
                jobs.append((system, f"{h}p", ref))
                stats = stats_dir / f"{system}_{h}_{ref}.log"
                graph.append(f"[d{label}{ref}][{pad}]psnr=stats_file={stats}[x{len(jobs)}]")
    cmd += ["-filter_complex", ";".join(graph)]
    for job in range(1, len(jobs) + 1):
        cmd += ["-map", f"[x{job}]"]
    cmd += ["-c:v", "wrapped_avframe", "-f", "null", "-"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    results: dict[str, Any] = {"wall_s": time.perf_counter() - t0, "seconds": seconds}
    for system, rung, ref in jobs:
        stats = stats_dir / f"{system}_{rung[:-1]}_{ref}.log"
        results.setdefault(system, {}).setdefault(rung, {})[ref] = _psnr_from_stats(stats)
    return results


def scaler_agreement(source: Path, frames: int = 10) -> dict[str, dict[str, float]]:
    """PSNR between PyAV's bicubic ``reformat`` (kinoray's scaler) and the CLI's ``scale=W:H:flags=bicubic``
    on the first source frames, straight from 1080p: how much of a PSNR gap is the scaler, not the encoder."""
    import av
    import numpy as np
    from av.video.reformatter import Interpolation

    def db(a: list[Any], b: list[Any]) -> float:
        mse = sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b, strict=True)) / sum(x.size for x in a)
        return 10 * math.log10(255**2 / mse) if mse else math.inf

    decoded = []
    with av.open(str(source)) as container:
        for frame in container.decode(video=0):
            decoded.append(frame)
            if len(decoded) == frames:
                break
    out: dict[str, dict[str, float]] = {}
    for h in LADDER[1:]:
        w, hh = SIZES[h]
        cw, ch = (w + 1) // 2, (hh + 1) // 2
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-frames:v", str(frames), "-vf",
                              f"scale={w}:{hh}:flags=bicubic", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
                             capture_output=True, check=True).stdout
        size = w * hh + 2 * cw * ch
        yuv, luma = [], []
        for number, frame in enumerate(decoded):
            chunk = np.frombuffer(raw[number * size:(number + 1) * size], np.uint8).astype(np.float64)
            ref = [chunk[:w * hh].reshape(hh, w), chunk[w * hh:w * hh + cw * ch].reshape(ch, cw),
                   chunk[w * hh + cw * ch:].reshape(ch, cw)]
            scaled = frame.reformat(width=w, height=hh, format="yuv420p", interpolation=Interpolation.BICUBIC)
            ours = [np.frombuffer(memoryview(p), np.uint8).reshape(p.height, p.line_size)[:, :p.width]
                    .astype(np.float64) for p in scaled.planes]
            yuv.append(db(ours, ref))
            luma.append(db(ours[:1], ref[:1]))
        out[f"{h}p"] = {"psnr": sum(yuv) / len(yuv), "psnr_y": sum(luma) / len(luma)}
    return out


def _psnr_from_stats(path: Path) -> dict[str, float]:
    mse_avg = mse_y = 0.0
    frames = 0
    min_psnr = math.inf
    for line in path.read_text().splitlines():
        fields = dict(item.split(":", 1) for item in line.split())
        mse_avg += float(fields["mse_avg"])
        mse_y += float(fields["mse_y"])
        min_psnr = min(min_psnr, float(fields["psnr_avg"]) if fields["psnr_avg"] != "inf" else math.inf)
        frames += 1

    def db(mse: float) -> float:
        return 10 * math.log10(255**2 / mse) if mse > 0 else math.inf

    return {"psnr": db(mse_avg / frames), "psnr_y": db(mse_y / frames), "min_frame_psnr": min_psnr,
            "frames": frames}


# ------------------------------------------------------------------------------------------------ input


def source_pattern(width: int, height: int) -> str:
    cw, ch = (width * 4 // 3) & ~1, (height * 4 // 3) & ~1
    ax, ay = (cw - width) // 2, (ch - height) // 2
    return PATTERN.format(cw=cw, ch=ch, w=width, h=height, fps=FPS, ax=ax, ay=ay, mx=ax - 1, my=ay - 1)


def ensure_source(work: Path, width: int, height: int, seconds: float) -> Path:
    from kinoray.media.synthetic import generate_clip

    pattern = source_pattern(width, height)
    key = hashlib.sha1(f"{pattern}|{SOURCE_PRESET}|{SOURCE_CRF}|{seconds}".encode()).hexdigest()[:8]
    path = work / "inputs" / f"src_{height}p{FPS}_{seconds:g}s_{key}.mp4"
    if not path.exists():
        t0 = time.perf_counter()
        print(f"  generating {path.name} ({width}x{height}, {seconds:g} s) …", flush=True)
        generate_clip(path, width=width, height=height, fps=FPS, seconds=seconds, pattern=pattern,
                      preset=SOURCE_PRESET, crf=SOURCE_CRF)
        print(f"  generated in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--", "kinoray")
    return {"commit": git("rev-parse", "HEAD"), "kinoray_dirty_files": dirty.splitlines(),
            "kinoray_diff_sha1": hashlib.sha1(git("diff", "HEAD", "--", "kinoray").encode()).hexdigest()[:12]
            if dirty else None}


def _versions() -> dict[str, str]:
    """FFmpeg/x264 builds on both sides: PyAV bundles its own FFmpeg and libx264, the CLI uses Debian's."""
    import re

    import av

    def x264_core(data: bytes) -> str:
        found = re.search(rb"x264 - core (\d+)( r\d+ \w+)?", data)
        return found.group(0).decode() if found else "unknown"

    cli = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=size=64x64", "-frames:v", "1",
                          "-c:v", "libx264", "-f", "h264", "-"], capture_output=True)
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 64, 64, "yuv420p", Fraction(1, 30)
    packets = [bytes(p) for p in ctx.encode(av.VideoFrame(64, 64, "yuv420p"))] + [bytes(p) for p in ctx.encode(None)]
    first = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"ffmpeg_cli": first, "ffmpeg_cli_x264": x264_core(cli.stdout), "pyav": av.__version__,
            "pyav_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "pyav_x264": x264_core(b"".join(packets) + bytes(ctx.extradata or b"")),
            "python": platform.python_version()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="main 1080p input length (default 60)")
    parser.add_argument("--long-factor", type=int, default=10, help="memory run length multiple (default 10)")
    parser.add_argument("--chunk-seconds", type=float, default=None,
                        help=f"kinoray chunk length (default {CHUNK_S}; 4 with --quick so it still has chunks)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="Ray CPUs (default: all)")
    parser.add_argument("--psnr-seconds", type=float, default=0, help="limit PSNR to the first N s (0 = all)")
    parser.add_argument("--ffmpeg-serial", action="store_true", help="also time the CLI single-threaded")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile kinoray's sequential run (top functions go into the JSON)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed ffmpeg/kinoray pairs, alternating order; the ratio target uses their median")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory-flatness runs")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 s input, long factor 3")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "transcode_vs_ffmpeg.json")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "transcode_vs_ffmpeg")
    parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child:
        mode, raw = args._child
        spec = json.loads(raw)
        data = {"ray": child_ray, "serial": child_serial}[mode](spec)
        Path(spec["result"]).write_text(json.dumps(data, default=str))
        return
    if args.quick:
        args.seconds, args.long_factor = 10, 3
    if args.chunk_seconds is None:
        args.chunk_seconds = 4 if args.quick else CHUNK_S
    run(args)


def run(args: argparse.Namespace) -> None:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    started = time.perf_counter()
    load_start = os.getloadavg()
    cores = args.cores
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]kinoray vs ffmpeg[/] — {args.seconds:g} s 1080p30, {cores} cores, "
                  f"load at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    phases: dict[str, Any] = {}

    def phase(name: str) -> None:
        phases[name] = {"loadavg": os.getloadavg(), "t_s": time.perf_counter() - started}
        console.print(f"[cyan]{name}[/] (load {phases[name]['loadavg'][0]:.2f})")

    phase("inputs")
    source = ensure_source(work, 1920, 1080, args.seconds)

    phase("ffmpeg ladder")
    peer = run_ffmpeg(source, work / "ffmpeg")
    serial_peer = None
    if args.ffmpeg_serial:
        phase("ffmpeg ladder, 1 thread")
        serial_peer = run_ffmpeg(source, work / "ffmpeg_serial", serial=True)

    phase("kinoray 1-thread baseline (sequential, one chunk)")
    spec_serial = {"source": str(source), "out": str(work / "kinoray_serial"), "ladder": LADDER,
                   "chunk_seconds": args.seconds + 10 * SEGMENT_S}
    serial = run_child("serial", spec_serial, work)

    phase(f"kinoray ladder on Ray ({cores} CPUs, {args.chunk_seconds:g} s chunks)")
    spec_ray = {"source": str(source), "out": str(work / "kinoray"), "ladder": LADDER,
                "chunk_seconds": args.chunk_seconds, "cores": cores, "warm": True}
    ours = run_child("ray", spec_ray, work)

    # Repeated pairs, alternating which side goes first (BA, AB, ...): this VM's speed drifts by 5-15 % over
    # minutes, so one pair decides little; the target uses the median of the per-pair ratios.
    pairs = [{"ffmpeg_wall_s": peer["wall_s"], "kinoray_wall_s": ours["wall_s"], "order": "ffmpeg first",
              "kinoray_warm_wall_s": ours["warm_workers"]["wall_s"]}]
    for repeat in range(1, args.repeats):
        order = ("kinoray", "ffmpeg") if repeat % 2 else ("ffmpeg", "kinoray")
        phase(f"repeat {repeat}: {' then '.join(order)}")
        walls: dict[str, float] = {}
        for side in order:
            out = work / f"{side}_repeat"
            if side == "ffmpeg":
                walls[side] = run_ffmpeg(source, out)["wall_s"]
            else:
                child = run_child("ray", {**spec_ray, "out": str(out)}, work)
                walls[side], walls["warm"] = child["wall_s"], child["warm_workers"]["wall_s"]
            shutil.rmtree(out, ignore_errors=True)
        pairs.append({"ffmpeg_wall_s": walls["ffmpeg"], "kinoray_wall_s": walls["kinoray"],
                      "kinoray_warm_wall_s": walls["warm"], "order": f"{order[0]} first"})
    for pair in pairs:
        pair["ratio"] = pair["kinoray_wall_s"] / pair["ffmpeg_wall_s"]
        # kinoray's second job in the same driver (the first job's actors kept) against the same ffmpeg run
        pair["ratio_warm_workers"] = pair["kinoray_warm_wall_s"] / pair["ffmpeg_wall_s"]

    profile = None
    if args.profile:
        phase("kinoray sequential under cProfile")
        profile = run_child("serial", {**spec_serial, "out": str(work / "kinoray_profile"),
                                       "profile": str(work / "kinoray_serial.pstats")}, work)

    phase("PSNR")
    psnr = measure_psnr(source, work, work / "kinoray", work / "ffmpeg", args.psnr_seconds or None)
    scalers = scaler_agreement(source)

    memory: dict[str, Any] = {}
    if not args.skip_memory:
        for factor in (1, args.long_factor):
            seconds = args.seconds * factor
            phase(f"memory: kinoray 360p, {factor}x ({seconds:g} s)")
            small = ensure_source(work, 640, 360, seconds)
            run_ = run_child("ray", {"source": str(small), "out": str(work / f"kinoray_360p_{factor}x"),
                                     "ladder": SMALL_LADDER, "chunk_seconds": args.chunk_seconds,
                                     "cores": cores}, work)
            memory[f"{factor}x"] = {"seconds": seconds, "factor": factor, **{k: run_[k] for k in (
                "wall_s", "chunks", "peak_rss_sum_mb", "peak_pss_sum_mb", "peak_rss_single_mb",
                "peak_rss_driver_mb", "peak_rss_worker_max_mb", "peak_rss_incl_ray_daemons_mb", "foreign_cpu_s")}}

    # ---------------------------------------------------------------------------------------- derived
    one_thread = serial["encode_cpu_s"]
    ratio = statistics.median(pair["ratio"] for pair in pairs)
    warm_ratio = statistics.median(pair["ratio_warm_workers"] for pair in pairs)
    for data, own_cpu in ((ours, ours["cpu_s"]), (peer, peer["cpu_s"])):
        data["cpu_efficiency"] = one_thread / (data["wall_s"] * cores)
        data["core_utilisation"] = own_cpu / (data["wall_s"] * cores)
        data["cpu_vs_1thread"] = own_cpu / one_thread
        data["realtime_factor"] = args.seconds / data["wall_s"]
    ours["cpu_efficiency_cold"] = one_thread / (ours["wall_cold_s"] * cores)
    stages = ours.get("stage_seconds") or {}
    if stages.get("encode"):
        # how well the chunks filled the cores while encoding: perfect packing would take worker CPU / cores
        ours["encode_stage_packing"] = ours["worker_cpu_s"] / cores / stages["encode"]
    for system, data in (("kinoray", ours), ("ffmpeg", peer)):
        for rung, values in data["renditions"].items():
            values["kbps"] = values["bytes"] * 8 / args.seconds / 1000
            values["psnr"] = psnr[system][rung]["direct"]
            if system == "kinoray":
                values["psnr_vs_cascade_ref"] = psnr[system][rung]["cascade"]
    if serial_peer is not None:
        # the CLI measured against its own single-threaded cost instead of kinoray's
        peer["cpu_efficiency_own_1thread"] = serial_peer["cpu_s"] / (peer["wall_s"] * cores)

    targets: dict[str, Any] = {
        "wall_ratio": {"target": f"<= {TARGET_WALL_RATIO}" + (f" (median of {len(pairs)} pairs)" if len(pairs) > 1
                                                              else ""),
                       "value": ratio, "pass": ratio <= TARGET_WALL_RATIO, "pairs": pairs},
        "wall_ratio_warm_workers": {
            "target": f"<= {TARGET_WALL_RATIO} (informational: the job after another, on its kept actors)",
            "value": warm_ratio, "pass": warm_ratio <= TARGET_WALL_RATIO},
        "wall_ratio_cold": {"target": f"<= {TARGET_WALL_RATIO} (informational)",
                            "value": ours["wall_cold_s"] / peer["wall_s"],
                            "pass": ours["wall_cold_s"] / peer["wall_s"] <= TARGET_WALL_RATIO},
        "peak_rss_1080p_sum_lt_1gb": {"target": f"< {TARGET_PEAK_RSS_MB} MB (informational: grows with cores)",
                                      "value": ours["peak_rss_sum_mb"],
                                      "pass": ours["peak_rss_sum_mb"] < TARGET_PEAK_RSS_MB},
    }
    if memory:
        short, long_ = memory["1x"], memory[f"{args.long_factor}x"]
        growth = long_["peak_rss_sum_mb"] / short["peak_rss_sum_mb"]
        targets["memory_lt_1gb"] = {"target": f"< {TARGET_PEAK_RSS_MB} MB at {args.long_factor}x",
                                    "value": long_["peak_rss_sum_mb"],
                                    "pass": long_["peak_rss_sum_mb"] < TARGET_PEAK_RSS_MB}
        targets["memory_flat"] = {"target": f"{args.long_factor}x peak <= {TARGET_FLATNESS} x 1x peak",
                                  "value": growth, "pass": growth <= TARGET_FLATNESS,
                                  "single_process_growth": long_["peak_rss_single_mb"] / short["peak_rss_single_mb"]}

    usage = serial["child_rusage"]
    serial["foreign_cpu_s"] = max(0.0, usage["machine_busy_cpu_s"] - usage["cpu_s"])
    # A timed phase is "quiet" when other programs used under 5 % of the CPU the measured system used.
    quiet = {"ffmpeg": peer["foreign_cpu_s"] <= QUIET_SHARE * peer["cpu_s"],
             "kinoray": ours["foreign_cpu_s"] <= QUIET_SHARE * ours["cpu_s"],
             "kinoray_serial_baseline": serial["foreign_cpu_s"] <= QUIET_SHARE * usage["cpu_s"]}
    load_end = os.getloadavg()
    report = {
        "benchmark": "transcode_vs_ffmpeg",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "total_runtime_s": time.perf_counter() - started,
        "machine": {"cores": cores, "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(),
                    "loadavg_at_start": load_start, "loadavg_at_end": load_end,
                    "memory_gb": os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30},
        "phases": phases,
        "quiet": quiet,
        "git": _git_state(),
        "versions": _versions(),
        "input": {"file": source.name, "size": "1920x1080", "fps": FPS, "seconds": args.seconds,
                  "bytes": source.stat().st_size, "pattern": source_pattern(1920, 1080),
                  "encoded_with": f"libx264 {SOURCE_PRESET} crf {SOURCE_CRF}, GOP 250 (x264 default), AAC"},
        "settings": {"ladder": [f"{SIZES[h][0]}x{SIZES[h][1]}" for h in LADDER], "preset": PRESET, "crf": CRF,
                     "maxrate_bps": {f"{h}p": CAPS[h] for h in LADDER},
                     "bufsize_bps": {f"{h}p": 2 * CAPS[h] for h in LADDER}, "bframes": BFRAMES,
                     "gop_frames": math.floor(SEGMENT_S * FPS), "segment_s": SEGMENT_S,
                     "chunk_s": args.chunk_seconds, "audio": f"AAC {AUDIO_BITRATE // 1000}k stereo, once",
                     "kinoray_threads_per_encoder": 1, "kinoray_rendition_threads": "one per rendition", "ffmpeg_threads": "auto (CLI defaults)",
                     "ffmpeg_audio": "one audio rendition (a:0) in agroup 'aud', referenced by every video "
                                     "variant; kinoray likewise writes audio/ once"},
        "definitions": {
            "wall_ratio": "kinoray wall_s / ffmpeg wall_s; kinoray wall_s = transcode_file() with Ray started "
                          "(the job's actor start and probes included); wall_cold_s adds ray.init. With --repeats N, "
                          "the median over N timed pairs run in alternating order (targets.wall_ratio.pairs); "
                          "the table's walls are the first pair's. wall_ratio_warm_workers: the same job run again "
                          "right after in the same driver, on the actors the first job kept (keep_workers_seconds)",
            "cpu_efficiency": "one_thread_cpu_s / (wall_s * cores); one_thread_cpu_s = kinoray "
                              "encode_cpu_seconds run with sequential_executor as a single chunk, 1 thread "
                              "per decoder/encoder (decode + scale + 4 encodes; no audio, no chunk pre-roll)",
            "core_utilisation": "own CPU seconds / (wall_s * cores)",
            "cpu_vs_1thread": "own CPU seconds / one_thread_cpu_s (work inflation from threads/chunking)",
            "kinoray_cpu_s": "driver + Ray worker CPU over the timed call from /proc/<pid>/stat of the driver's "
                             "process tree (Ray daemons separate as ray_daemon_cpu_s)",
            "peak_rss_sum_mb": "max over 0.2 s samples of the summed RSS of the driver and Ray workers",
            "psnr": "mean-MSE PSNR (YUV weighted 4:1:1, and Y) vs the source scaled directly to the rung "
                    "with bicubic; psnr_vs_cascade_ref uses a 1080->720->480->360 bicubic cascade",
            "foreign_cpu_s": "machine busy CPU during the timed phase minus the measured system's CPU",
            "encode_stage_packing": "kinoray worker CPU / cores / encode-stage wall: 1.0 = chunks kept every "
                                    "core busy for the whole encode stage",
        },
        "one_thread_cpu_s": one_thread,
        "kinoray_serial_baseline": serial,
        "kinoray": ours,
        "ffmpeg": peer,
        "ffmpeg_serial": serial_peer,
        "psnr_pass": {"wall_s": psnr["wall_s"], "seconds": psnr["seconds"] or args.seconds},
        "scaler_agreement": {"what": "PSNR of PyAV bicubic reformat (kinoray) vs CLI scale=bicubic, straight from "
                                     "the source, first 10 frames; inf = identical",
                             **scalers},
        "memory_flatness": memory,
        "wall_ratio": ratio,
        "targets": targets,
        "all_targets_pass": all(t["pass"] for k, t in targets.items()
                                if k not in ("wall_ratio_cold", "peak_rss_1080p_sum_lt_1gb")),
        "profile": profile.get("profile_top") if profile else None,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_json_safe(report), indent=2, default=str))
    print_report(console, report, args)


def _json_safe(value: Any) -> Any:
    """Strict JSON: infinities (identical pictures) become the string "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def print_report(console: Any, report: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.table import Table

    ours, peer, machine = report["kinoray"], report["ffmpeg"], report["machine"]
    load = machine["loadavg_at_start"]
    table = Table(title=f"{args.seconds:g} s 1080p30 → 4-rung H.264 ladder, {machine['cores']} cores "
                        f"(load at start {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f})")
    for column, justify in (("system", "left"), ("rung", "left"), ("wall s", "right"), ("× realtime", "right"),
                            ("CPU s", "right"), ("CPU eff.", "right"), ("core util.", "right"),
                            ("peak RSS MB", "right"), ("PSNR dB", "right"), ("Y-PSNR", "right"),
                            ("kb/s", "right"), ("MB", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    rows = (("kinoray", ours, f"{ours['peak_rss_sum_mb']:.0f} Σ / {ours['peak_rss_single_mb']:.0f} max"),
            ("ffmpeg", peer, f"{peer['peak_rss_mb']:.0f}"))
    for label, data, rss in rows:
        wall = f"{data['wall_s']:.1f}" + (f" ({data['wall_cold_s']:.1f} cold)" if "wall_cold_s" in data else "")
        total = sum(r["bytes"] for r in data["renditions"].values())
        table.add_row(f"[bold]{label}[/]", "ladder", wall, f"{data['realtime_factor']:.2f}", f"{data['cpu_s']:.1f}",
                      f"{data['cpu_efficiency']:.2f}", f"{data['core_utilisation']:.2f}", rss, "", "",
                      f"{total * 8 / args.seconds / 1000:.0f}", f"{total / 1e6:.1f}")
        for rung in (f"{h}p" for h in LADDER):
            value = data["renditions"][rung]
            psnr = f"{value['psnr']['psnr']:.2f}"
            if "psnr_vs_cascade_ref" in value:
                psnr += f" ({value['psnr_vs_cascade_ref']['psnr']:.2f})"
            table.add_row("", rung, "", "", "", "", "", "", psnr, f"{value['psnr']['psnr_y']:.2f}",
                          f"{value['kbps']:.0f}", f"{value['bytes'] / 1e6:.2f}")
        table.add_section()
    console.print(table)
    serial = report["kinoray_serial_baseline"]
    console.print(f"1-thread ladder cost (kinoray sequential, one chunk): {report['one_thread_cpu_s']:.1f} CPU s "
                  f"({serial['wall_s']:.1f} s wall); kinoray on Ray: {ours['chunks']} chunks, worker CPU "
                  f"{ours['worker_cpu_s']:.1f} s, driver {ours['driver_cpu_s']:.1f} s, Ray daemons "
                  f"{ours['ray_daemon_cpu_s']:.1f} s; Ray start {ours['ray_start_and_warmup_s']:.1f} s")
    stages = ours.get("stage_seconds") or {}
    if stages:
        console.print("kinoray stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
                      + (f"; encode-stage packing {ours['encode_stage_packing']:.2f} (worker CPU ÷ cores ÷ encode wall)"
                         if "encode_stage_packing" in ours else ""))
    pairs = report["targets"]["wall_ratio"]["pairs"]
    if len(pairs) > 1:
        console.print("timed pairs (kinoray / ffmpeg wall s = ratio): " + "; ".join(
            f"{p['kinoray_wall_s']:.1f} / {p['ffmpeg_wall_s']:.1f} = {p['ratio']:.3f} ({p['order']})" for p in pairs)
            + f" → median {report['wall_ratio']:.3f}")
    if pairs[0].get("kinoray_warm_wall_s") is not None:
        console.print("kinoray's next job on the kept actors (wall s, ratio): " + "; ".join(
            f"{p['kinoray_warm_wall_s']:.1f} = {p['ratio_warm_workers']:.3f}" for p in pairs)
            + f" → median {report['targets']['wall_ratio_warm_workers']['value']:.3f}")
    console.print("kinoray PSNR in brackets: against a cascaded (1080→720→480→360) bicubic reference")
    agreement = {k: v for k, v in report["scaler_agreement"].items() if k != "what"}
    console.print("scaler agreement, PyAV reformat vs CLI scale (no encode), YUV / Y dB: " + ", ".join(
        f"{rung} {v['psnr']:.1f} / {v['psnr_y']:.1f}" for rung, v in agreement.items()))
    if report["ffmpeg_serial"]:
        fs = report["ffmpeg_serial"]
        console.print(f"ffmpeg CLI single-threaded: {fs['wall_s']:.1f} s wall, {fs['cpu_s']:.1f} CPU s; CLI CPU "
                      f"efficiency against its own 1-thread cost {peer['cpu_efficiency_own_1thread']:.2f}")
    console.print(f"foreign CPU (other programs) during timed runs: ffmpeg {peer['foreign_cpu_s']:.1f} s, "
                  f"kinoray {ours['foreign_cpu_s']:.1f} s, 1-thread baseline "
                  f"{serial['foreign_cpu_s']:.1f} s; load at end {machine['loadavg_at_end'][0]:.2f}")
    disturbed = [name for name, ok in report["quiet"].items() if not ok]
    if disturbed:
        console.print(f"[bold red]warning:[/] other programs took > {QUIET_SHARE:.0%} of the measured CPU during: "
                      f"{', '.join(disturbed)} — rerun on a quiet machine before trusting the ratios")
    memory = report["memory_flatness"]
    if memory:
        mem = Table(title="memory flatness: kinoray 640x360 → (360p, 240p)")
        for column in ("input", "chunks", "wall s", "Σ RSS MB", "Σ PSS MB", "max single MB", "driver MB",
                       "incl. Ray daemons MB"):
            mem.add_column(column, justify="right")
        for key, value in memory.items():
            mem.add_row(f"{key} ({value['seconds']:g} s)", str(value["chunks"]), f"{value['wall_s']:.1f}",
                        f"{value['peak_rss_sum_mb']:.0f}", f"{value['peak_pss_sum_mb']:.0f}",
                        f"{value['peak_rss_single_mb']:.0f}", f"{value['peak_rss_driver_mb']:.0f}",
                        f"{value['peak_rss_incl_ray_daemons_mb']:.0f}")
        console.print(mem)
    targets = Table(title="targets")
    for column in ("target", "goal", "value", "pass"):
        targets.add_column(column)
    for name, target in report["targets"].items():
        value = target["value"]
        targets.add_row(name, target["target"], f"{value:.3f}" if isinstance(value, float) else str(value),
                        "[green]yes[/]" if target["pass"] else "[red]no[/]")
    console.print(targets)
    console.print(f"JSON: {args.json}  (total {report['total_runtime_s']:.0f} s)")


if __name__ == "__main__":
    main()
