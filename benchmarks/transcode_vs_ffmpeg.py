"""kinoray's chunked ladder transcode vs the Debian ffmpeg CLI doing the same ladder in one process.

Same generated 1080p input (motion + texture), same 4-rung H.264 ladder, preset, CRF, VBV caps, GOP and
B-frames, AAC 128 kb/s. Prints a table and writes JSON (default benchmarks/results/transcode_vs_ffmpeg.json).

    .venv/bin/python benchmarks/transcode_vs_ffmpeg.py            # 60 s input + memory-flatness runs
    .venv/bin/python benchmarks/transcode_vs_ffmpeg.py --quick    # 10 s smoke run

Definitions:
- wall ratio = kinoray wall ÷ ffmpeg wall (target ≤ 0.95). kinoray's wall excludes starting Ray (a platform
  keeps its cluster up); the cold-start time is reported separately as ray_init_s.
- CPU efficiency = (CPU-seconds of a 1-thread encode of the ladder) ÷ (wall × cores). The 1-thread cost is
  kinoray's own per-chunk CPU time: every chunk worker runs single-threaded encoders, so their sum is exactly
  a 1-thread encode of the whole ladder. The same numerator is used for both systems.
- peak RSS: ffmpeg's max RSS; for kinoray the largest single process (driver or chunk worker) and the
  largest sum over the driver's process tree (which includes Ray's own daemons), sampled every 0.2 s.
- PSNR per rung against the source scaled (bicubic) to the rung, over the first --psnr-seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kinoray.cluster import ensure_ray, ray_executor  # noqa: E402
from kinoray.media import TranscodeOptions, transcode_file  # noqa: E402
from kinoray.media.ladder import DEFAULT_LADDER  # noqa: E402
from kinoray.media.synthetic import generate_clip  # noqa: E402

LADDER = (1080, 720, 480, 360)
SIZES = {1080: (1920, 1080), 720: (1280, 720), 480: (854, 480), 360: (640, 360)}
CAPS = dict(DEFAULT_LADDER)
PRESET, CRF, FPS, SEGMENT, CHUNK = "veryfast", 23, 30, 4, 20
PATTERN = "testsrc2=size={w}x{h}:rate={fps},noise=alls=8:allf=t+u"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _proc(pid: int) -> tuple[float, int]:
    """(cpu seconds, rss bytes) of one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[21]) * PAGE


class TreeSampler:
    """Samples RSS over this process's tree; remembers peaks and the last CPU time of every process."""

    def __init__(self) -> None:
        self.peak_sum = self.peak_single = 0
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in _tree(os.getpid()):
                cpu, rss = _proc(pid)
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu)
                total += rss
                self.peak_single = max(self.peak_single, rss)
            self.peak_sum = max(self.peak_sum, total)
            self._stop.wait(0.2)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_kinoray(source: Path, out: Path, ladder: tuple[int, ...], cores: int, chunk_seconds: float = CHUNK) -> dict:
    import ray

    shutil.rmtree(out, ignore_errors=True)
    options = TranscodeOptions(ladder=ladder, preset=PRESET, quality=CRF, segment_seconds=SEGMENT,
                               chunk_seconds=chunk_seconds, threads=1)
    executor = ray_executor(cores)
    # A platform keeps its Ray cluster running: start it outside the timed region and report it apart.
    init_started = time.perf_counter()
    ensure_ray(cores)
    ray_init = time.perf_counter() - init_started
    with TreeSampler() as sampler:
        cpu_before = sum(sampler.cpu.values())
        started = time.perf_counter()
        result = transcode_file(str(source), out, options, executor=executor)
        wall = time.perf_counter() - started
        time.sleep(0.3)
    cpu_tree = sum(sampler.cpu.values()) - cpu_before
    ray.shutdown()
    return {"wall_s": wall, "ray_init_s": ray_init, "stage_s": result.stage_seconds, "cpu_s_tree": cpu_tree, "one_thread_cpu_s": result.encode_cpu_seconds,
            "peak_rss_single_mb": sampler.peak_single / 2**20, "peak_rss_tree_mb": sampler.peak_sum / 2**20,
            "chunks": result.chunks, "frames": result.frames,
            "renditions": {r.name: {"bytes": r.bytes, "kbps": r.average_bandwidth / 1000} for r in result.renditions},
            "realtime": result.realtime_factor}


def run_ffmpeg(source: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    gop = FPS * SEGMENT
    splits = "".join(f"[v{i}]" for i in range(len(LADDER)))
    graph = f"[0:v]split={len(LADDER)}{splits};" + ";".join(
        f"[v{i}]scale={SIZES[h][0]}:{SIZES[h][1]}:flags=bicubic[o{i}]" for i, h in enumerate(LADDER))
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), "-filter_complex", graph]
    for i, _ in enumerate(LADDER):
        cmd += ["-map", f"[o{i}]"]
    cmd += ["-map", "0:a:0", "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-bf", "3",
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-pix_fmt", "yuv420p",
            "-x264-params", "open-gop=0"]
    for i, h in enumerate(LADDER):
        cmd += [f"-maxrate:v:{i}", str(CAPS[h]), f"-bufsize:v:{i}", str(2 * CAPS[h])]
    stream_map = " ".join(f"v:{i},agroup:aud" for i in range(len(LADDER))) + " a:0,agroup:aud"
    cmd += ["-c:a", "aac", "-b:a", "128k", "-f", "hls", "-hls_time", str(SEGMENT), "-hls_playlist_type", "vod",
            "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments", "-master_pl_name", "master.m3u8",
            "-var_stream_map", stream_map, "-hls_segment_filename", str(out / "v%v/seg%d.m4s"),
            str(out / "v%v/index.m3u8")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    sizes = {f"{h}p": sum(p.stat().st_size for p in (out / f"v{i}").iterdir()) for i, h in enumerate(LADDER)}
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": after.ru_maxrss / 1024, "command": " ".join(cmd),
            "renditions": {k: {"bytes": v} for k, v in sizes.items()}}


def psnr(distorted: str, source: Path, height: int, seconds: float) -> float:
    width, height = SIZES[height]
    graph = (f"[0:v]setpts=PTS-STARTPTS,format=yuv420p[d];[1:v]scale={width}:{height}:flags=bicubic,"
             f"setpts=PTS-STARTPTS,format=yuv420p[r];[d][r]psnr")
    proc = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-t", str(seconds), "-i", distorted,
                           "-t", str(seconds), "-i", str(source), "-filter_complex", graph, "-f", "null", "-"],
                          capture_output=True, text=True, check=True)
    match = re.search(r"average:([\d.]+|inf)", proc.stderr)
    return float(match.group(1)) if match else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--long-factor", type=int, default=10)
    parser.add_argument("--psnr-seconds", type=float, default=20)
    parser.add_argument("--chunk-seconds", type=float, default=CHUNK, help="kinoray chunk length")
    parser.add_argument("--quick", action="store_true", help="10 s input, long factor 3")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/transcode_vs_ffmpeg.json"))
    parser.add_argument("--work", default=str(ROOT / "benchmarks/results/work"))
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.long_factor, args.psnr_seconds = 10, 3, 5
    cores = os.cpu_count() or 1
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    console = Console()
    load = os.getloadavg()
    source = work / f"src_1080p_{int(args.seconds)}s.mp4"
    if not source.exists():
        console.print(f"generating {source.name} …")
        generate_clip(source, width=1920, height=1080, fps=FPS, seconds=args.seconds,
                      pattern=PATTERN.format(w=1920, h=1080, fps=FPS))

    console.print("ffmpeg CLI ladder …")
    peer = run_ffmpeg(source, work / "ffmpeg")
    console.print("kinoray ladder …")
    ours = run_kinoray(source, work / "kinoray", LADDER, cores, args.chunk_seconds)
    baseline = ours["one_thread_cpu_s"]
    for result, wall in ((ours, ours["wall_s"]), (peer, peer["wall_s"])):
        result["cpu_efficiency"] = baseline / (wall * cores)
    for h in LADDER:
        name = f"{h}p"
        track = work / "kinoray" / name
        joined = work / f"kinoray_{name}.mp4"
        with open(joined, "wb") as handle:
            handle.write((track / "init.mp4").read_bytes())
            for segment in sorted(track.glob("seg_*.m4s")):
                handle.write(segment.read_bytes())
        ours["renditions"][name]["psnr"] = psnr(str(joined), source, h, args.psnr_seconds)
        peer["renditions"][name]["psnr"] = psnr(str(work / "ffmpeg" / f"v{LADDER.index(h)}" / "index.m3u8"),
                                                source, h, args.psnr_seconds)

    console.print(f"memory flatness: 360p input, 1× and {args.long_factor}× …")
    memory = {}
    for factor in (1, args.long_factor):
        seconds = args.seconds * factor
        small = work / f"src_360p_{int(seconds)}s.mp4"
        if not small.exists():
            generate_clip(small, width=640, height=360, fps=FPS, seconds=seconds,
                          pattern=PATTERN.format(w=640, h=360, fps=FPS))
        run = run_kinoray(small, work / f"kinoray_360p_{factor}x", (360, 240), cores, args.chunk_seconds)
        memory[f"{factor}x"] = {"seconds": seconds, "peak_rss_single_mb": run["peak_rss_single_mb"],
                                "peak_rss_tree_mb": run["peak_rss_tree_mb"], "wall_s": run["wall_s"]}
    flat = memory[f"{args.long_factor}x"]["peak_rss_single_mb"] <= 1.2 * memory["1x"]["peak_rss_single_mb"]

    ratio = ours["wall_s"] / peer["wall_s"]
    report = {
        "input": {"file": source.name, "seconds": args.seconds, "size": "1920x1080", "fps": FPS, "pattern": PATTERN},
        "machine": {"cores": cores, "loadavg_at_start": load},
        "settings": {"ladder": LADDER, "preset": PRESET, "crf": CRF, "caps_bps": {h: CAPS[h] for h in LADDER},
                     "segment_s": SEGMENT, "chunk_s": args.chunk_seconds, "bframes": 3},
        "kinoray": ours, "ffmpeg": peer, "memory_flatness": memory,
        "wall_ratio": ratio,
        "targets": {"wall_ratio_le_0_95": ratio <= 0.95,
                    "peak_rss_single_lt_1gb": ours["peak_rss_single_mb"] < 1024,
                    "rss_flat_at_long_factor": flat},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2, default=str))

    table = Table(title=f"{args.seconds:.0f} s 1080p30 → 4-rung H.264 ladder on {cores} cores (load {load[0]:.2f})")
    for column in ("system", "wall s", "× realtime", "CPU eff.", "peak RSS MB", *[f"{h}p PSNR" for h in LADDER],
                   *[f"{h}p MB" for h in LADDER]):
        table.add_column(column)
    for label, data, rss in (("kinoray", ours, f"{ours['peak_rss_single_mb']:.0f} / tree {ours['peak_rss_tree_mb']:.0f}"),
                             ("ffmpeg", peer, f"{peer['peak_rss_mb']:.0f}")):
        table.add_row(label, f"{data['wall_s']:.1f}", f"{args.seconds / data['wall_s']:.2f}",
                      f"{data['cpu_efficiency']:.2f}", rss,
                      *[f"{data['renditions'][f'{h}p']['psnr']:.2f}" for h in LADDER],
                      *[f"{data['renditions'][f'{h}p']['bytes'] / 1e6:.1f}" for h in LADDER])
    console.print(table)
    console.print(f"wall ratio kinoray/ffmpeg = {ratio:.3f} (target ≤ 0.95)")
    for key, value in memory.items():
        console.print(f"memory {key} ({value['seconds']:.0f} s 360p): peak single process "
                      f"{value['peak_rss_single_mb']:.0f} MB, tree {value['peak_rss_tree_mb']:.0f} MB")
    console.print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
