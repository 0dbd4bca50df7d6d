"""How kinoray's cluster transcode (``TranscodeJob`` on Ray) scales: workers, encoder threads, per-chunk
scheduling overhead and chunk length — and a model, from those measurements, of how many CPU workers or
NVENC GPUs turn a 1-hour 1080p ladder around in under 5 minutes.

    .venv/bin/python benchmarks/scaling.py --quick             # smoke: 720p scaling clip, 20 s sweep (~2.5 min)
    .venv/bin/python benchmarks/scaling.py                     # 60 s 1080p scaling runs + 600 s sweep (~50-70 min)
    .venv/bin/python benchmarks/scaling.py --sections sweep --sweep-seconds 120 --preset ultrafast

Sections (``--sections``, default all):

* ``scaling`` (a) — chunks/s and × realtime of a ladder (1080p 4-rung; 720p 3-rung with ``--quick``) with 1 and 2
  workers (``ClusterSettings.max_workers``) on the same clip and the same chunk plan (``parallelism`` is fixed
  at the largest worker count, so 1 and 2 workers get identical chunks). Speed-up = 2-worker ÷ 1-worker
  encode-stage throughput (target ≥ 1.8).
* ``threads`` (b) — the same runs with 2 encoder threads per rendition (``TranscodeOptions.threads``): × realtime
  per Ray CPU (what the scheduler reserves) and per core actually busy (chunk CPU seconds ÷ encode wall).
* ``overhead`` (c) — per-chunk scheduling overhead with a negligible encode: a 128x72 clip, 1 s segments, one
  segment per chunk, one rung. Two measures: *capacity* = (encode-stage wall × workers − Σ worker-side chunk
  seconds) ÷ chunks, i.e. worker time per chunk spent on anything but ``transcode_chunk``; *latency* = per
  chunk, coordinator dispatch → done minus the worker-side seconds (mean, p50, p95). Target < 50 ms.
* ``sweep`` (d) — total time of a 1080p 4-rung ladder (with audio: the end-to-end product run) for chunk lengths
  5/10/20/40 s on all workers. 5 s segments by default so each length is a whole number of segments (the
  product default is 4 s, which would turn 5 → 4 and 10 → 8).
* model (e) — always computed from whatever was measured; its formula and every input go into the JSON.

(a)-(c) turn off the product's per-rendition encoder threads (``parallel_renditions=False``) so a worker uses
exactly one core and the speed-up measures the scheduler; the sweep (d) runs with the product's defaults.

Fairness: one local Ray session (``ensure_ray(cores)``) for the whole script, but every job starts its own
fresh worker actors (``keep_workers_seconds=0``: the pool is per job, killed at its end), so no configuration
inherits a warm worker; a
discarded warm-up job runs first; the scaling/threads runs go in ABBA order (1w, 2w, 2w, 1w) so slow drift in
background load hits both sides; ``--repeats N`` keeps the best (lowest encode-stage wall) of N. Every run
records the load average and ``foreign_cpu_s`` (machine busy CPU minus the driver's Ray process tree); a run
where other programs took more than 5 % of the machine's CPU capacity is flagged. Inputs are generated once
and cached (``benchmarks/results/media/``, git-ignored): testsrc2 panned + temporal grain, the same graph as
``transcode_vs_ffmpeg.py``, so per-second costs are comparable with it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import transcode_vs_ffmpeg as tvf  # noqa: E402  (TreeSampler, /proc helpers, input graph)

FPS = 30
CRF = 23
SEGMENT_S = 4
SIZES = {**tvf.SIZES, 72: (128, 72)}
FULL_LADDER = (1080, 720, 480, 360)
QUICK_LADDER = (720, 480, 360)
TARGET_SPEEDUP = 1.8
TARGET_OVERHEAD_MS = 50.0
THREADS_TIE = 0.03  # thread counts within 3 % of each other are reported as a tie
QUIET_SHARE = 0.05
DEFAULT_NVENC_FPS = 600.0  # ASSUMPTION, not a measurement: 1080p-equivalent frames/s of one NVENC engine at P4
MEDIA = ROOT / "benchmarks" / "results" / "media"


# ------------------------------------------------------------------------------------------------ inputs


def ensure_media(width: int, height: int, seconds: float, *, grain: bool = True, audio: bool = True,
                 fps: int = FPS, cache: Path = MEDIA) -> Path:
    """A generated H.264 clip, cached by (graph, size, length, audio). ``grain``: testsrc2 panned with temporal
    noise (``transcode_vs_ffmpeg``'s graph: real motion and residual in every rung); else plain testsrc2."""
    from kinoray.media.synthetic import generate_clip

    pattern = tvf.source_pattern(width, height) if grain else "testsrc2"
    if grain and fps != tvf.FPS:
        pattern = pattern.replace(f"rate={tvf.FPS}", f"rate={fps}")
    key = hashlib.sha1(f"{pattern}|{width}x{height}|{fps}|{seconds}|{audio}|{tvf.SOURCE_PRESET}|{tvf.SOURCE_CRF}"
                       .encode()).hexdigest()[:8]
    path = cache / f"{'grain' if grain else 'testsrc2'}_{height}p{fps}_{seconds:g}s{'' if audio else '_noaudio'}_{key}.mp4"
    if not path.exists():
        t0 = time.perf_counter()
        print(f"  generating {path.name} ({width}x{height}, {seconds:g} s) …", flush=True)
        generate_clip(path, width=width, height=height, fps=fps, seconds=seconds, pattern=pattern, audio=audio,
                      preset=tvf.SOURCE_PRESET, crf=tvf.SOURCE_CRF)
        print(f"  generated in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


# ------------------------------------------------------------------------------------------------- runs


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _driver_cpu() -> float:
    times = os.times()
    return times.user + times.system


def summarise_events(events: list[Any]) -> dict[str, Any]:
    """Per video chunk: worker-side seconds and dispatch → done latency; the audio item's latency."""
    dispatched: dict[tuple[str, int], float] = {}
    chunk_seconds: list[float] = []
    latency_overhead: list[float] = []
    audio_latency = 0.0
    for event in events:
        key = (event.item, event.attempt)
        if event.kind == "dispatched":
            dispatched[key] = event.at
        elif event.kind == "done" and key in dispatched:
            latency = event.at - dispatched[key]
            if event.chunk_index is None:
                audio_latency += latency
            else:
                chunk_seconds.append(event.seconds)
                latency_overhead.append(latency - event.seconds)
    ms = [1000 * value for value in latency_overhead]
    return {
        "chunk_seconds": chunk_seconds,
        "worker_chunk_s_sum": sum(chunk_seconds),
        "worker_chunk_s_mean": sum(chunk_seconds) / len(chunk_seconds) if chunk_seconds else math.nan,
        "latency_overhead_ms": {"mean": sum(ms) / len(ms) if ms else math.nan, "p50": _percentile(ms, 50),
                                "p95": _percentile(ms, 95), "max": max(ms) if ms else math.nan, "n": len(ms)},
        "audio_latency_s": audio_latency,
        "retry_events": sum(event.kind == "retry" for event in events),
    }


class Bench:
    """The Ray session, the base settings and the output area shared by all runs of one invocation."""

    def __init__(self, args: argparse.Namespace, console: Any) -> None:
        from kinoray.settings import Settings

        self.args = args
        self.console = console
        self.work: Path = args.work.resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(data_dir=self.work / "data")

    def run_job(self, label: str, source: Path, options: Any, workers: int) -> dict[str, Any]:
        """One ``TranscodeJob`` with at most ``workers`` encoder actors, measured end to end."""
        from kinoray.cluster import TranscodeJob

        events: list[Any] = []
        marks: dict[str, tuple[float, float]] = {}
        records: list[Any] = []

        def on_update(record: Any) -> None:
            records.append(record)
            marks.setdefault(record.state.value, (time.perf_counter(), _driver_cpu()))

        # keep_workers_seconds=0: every job starts (and kills) its own actors, as the fairness rule says
        cluster = self.settings.cluster.model_copy(update={"max_workers": workers, "keep_workers_seconds": 0})
        settings = self.settings.model_copy(update={"cluster": cluster})
        out = self.work / "out" / label
        load = os.getloadavg()
        with tvf.TreeSampler() as sampler:
            busy0 = tvf._busy_cpu_seconds()
            t0 = time.perf_counter()
            result = TranscodeJob(str(source), str(out), options, settings=settings, on_event=events.append,
                                  on_update=on_update).run()
            wall = time.perf_counter() - t0
            busy = tvf._busy_cpu_seconds() - busy0
        cpu = sampler.cpu()
        if not self.args.keep_outputs:
            shutil.rmtree(out, ignore_errors=True)
        own = cpu["driver"] + cpu["worker"] + cpu["daemon"]
        stages = dict(result.stage_seconds)
        encode = stages.get("encode", math.nan)
        ev = summarise_events(events)
        pool = records[-1].workers if records else workers
        duration = result.duration_seconds
        driver_encode_cpu = math.nan
        if "encoding" in marks and "packaging" in marks:
            driver_encode_cpu = marks["packaging"][1] - marks["encoding"][1]
            driver_encode_cpu -= sampler.sampler_cpu * encode / wall  # the sampler thread runs in this process
        run = {
            "label": label, "source": source.name, "workers": pool, "max_workers": workers,
            "threads": options.threads, "ladder": list(options.ladder or ()), "preset": options.preset,
            "segment_seconds": options.segment_seconds, "chunk_seconds_requested": options.chunk_seconds,
            "parallelism": options.parallelism, "duration_s": duration, "frames": result.frames,
            "frame_rate": result.frame_rate, "chunks": result.chunks,
            "chunk_s_mean": duration / result.chunks if result.chunks else math.nan,
            "wall_s": wall, "stage_seconds": stages, "encode_s": encode,
            "chunks_per_s": result.chunks / encode, "realtime_encode": duration / encode,
            "realtime_job": duration / wall, "encode_cpu_s": result.encode_cpu_seconds,
            "worker_chunk_s_sum": ev["worker_chunk_s_sum"], "worker_chunk_s_mean": ev["worker_chunk_s_mean"],
            "cost_per_content_s": ev["worker_chunk_s_sum"] / duration,
            "cpu_per_content_s": result.encode_cpu_seconds / duration,
            "packing": ev["worker_chunk_s_sum"] / (encode * pool),
            "cores_busy": result.encode_cpu_seconds / encode,
            "overhead_capacity_ms": 1000 * (encode * pool - ev["worker_chunk_s_sum"] - ev["audio_latency_s"])
            / result.chunks,
            "overhead_latency_ms": ev["latency_overhead_ms"],
            "audio_latency_s": ev["audio_latency_s"],
            "driver_encode_cpu_ms_per_chunk": 1000 * driver_encode_cpu / result.chunks,
            "preroll_frames": result.chunk_stats.get("preroll", 0),
            "encoder": result.encoder, "retries": result.retries + ev["retry_events"],
            "cpu_s": {k: round(v, 3) for k, v in cpu.items()}, "sampler_cpu_s": sampler.sampler_cpu,
            "foreign_cpu_s": max(0.0, busy - own - sampler.sampler_cpu), "loadavg_before": load,
            "chunk_seconds_each": [round(s, 4) for s in ev["chunk_seconds"]],
        }
        # share of the machine's capacity (all its CPUs over the job's wall) that other programs took
        run["foreign_share"] = run["foreign_cpu_s"] / (wall * (os.cpu_count() or 1))
        run["quiet"] = run["foreign_share"] <= QUIET_SHARE
        flag = "" if run["quiet"] else f" [red](disturbed: other programs {run['foreign_cpu_s']:.1f} CPU-s)[/]"
        self.console.print(f"  {label}: {result.chunks} chunks, wall {wall:.1f} s (encode {encode:.1f} s), "
                           f"{run['realtime_encode']:.2f}× realtime{flag}")
        return run


def _options(**kw: Any) -> Any:
    from kinoray.media.pipeline import TranscodeOptions

    # One encoder thread per rendition *and* the renditions encoded one after another, so a worker uses one
    # core and (a)-(c) measure the scheduler. The product default also gives each rendition its own thread
    # (a lone chunk then borrows idle cores); the sweep (d), an end-to-end product run, keeps that default.
    base = {"codec": "h264", "encoder": "libx264", "decoder": "cpu", "quality": CRF, "threads": 1,
            "parallel_renditions": False}
    return TranscodeOptions(**{**base, **kw})


def warm_up(bench: Bench) -> dict[str, Any]:
    """A tiny job on all workers, discarded: Ray's worker machinery, imports and page cache get warm."""
    source = ensure_media(128, 72, 8, grain=False, audio=False)
    options = _options(ladder=(72,), segment_seconds=1, chunk_seconds=2, preset=bench.args.preset)
    t0 = time.perf_counter()
    bench.run_job("warm-up", source, options, max(bench.args.workers))
    return {"seconds": time.perf_counter() - t0}


def section_scaling(bench: Bench, threads: tuple[int, ...]) -> dict[str, Any]:
    """(a) + (b): every (workers, threads) on one clip and one chunk plan, ABBA order, best of --repeats."""
    args = bench.args
    height = 720 if args.quick else 1080
    ladder = QUICK_LADDER if args.quick else FULL_LADDER
    source = ensure_media(*SIZES[height], args.scaling_seconds, audio=False)
    workers = sorted(set(args.workers))
    # ABBA: worker counts ascending for the first thread count, descending for the next, …; every other
    # repeat runs the whole sequence backwards. Drift in background load then hits every config alike.
    sequence: list[tuple[int, int]] = []
    for position, t in enumerate(threads):
        sequence += [(w, t) for w in (workers if position % 2 == 0 else workers[::-1])]
    order: list[tuple[int, int]] = []
    for repeat in range(args.repeats):
        order += sequence if repeat % 2 == 0 else sequence[::-1]
    all_runs: dict[str, list[dict[str, Any]]] = {}
    for number, (w, t) in enumerate(order):
        options = _options(ladder=ladder, segment_seconds=SEGMENT_S, chunk_seconds=args.chunk_seconds,
                           parallelism=max(workers), preset=args.preset, threads=t)
        run = bench.run_job(f"scaling-{w}w-{t}t-{number}", source, options, w)
        all_runs.setdefault(f"{w}w-{t}t", []).append(run)
    best = {key: min(runs, key=lambda r: r["encode_s"]) for key, runs in all_runs.items()}
    for key, run in best.items():
        run["repeats"] = [r["encode_s"] for r in all_runs[key]]
    t1 = {int(k.split("w")[0]): v for k, v in best.items() if k.endswith("-1t")}
    speedup = None
    if len(t1) >= 2:
        lo, hi = min(t1), max(t1)
        speedup = {
            "workers": [lo, hi],
            "encode_throughput_ratio": t1[hi]["chunks_per_s"] / t1[lo]["chunks_per_s"],
            "job_wall_ratio": t1[lo]["wall_s"] / t1[hi]["wall_s"],
            "ideal": hi / lo,
        }
        speedup["parallel_efficiency"] = speedup["encode_throughput_ratio"] / speedup["ideal"]
    threads_verdict = None
    packed = {t: best[f"{max(workers)}w-{t}t"] for t in threads if f"{max(workers)}w-{t}t" in best}
    if len(packed) > 1:
        for run in packed.values():
            run["realtime_per_busy_core"] = run["realtime_encode"] / run["cores_busy"]
        winner = max(packed, key=lambda t: packed[t]["realtime_encode"])
        threads_verdict = {
            "workers": max(workers),
            "realtime_by_threads": {t: packed[t]["realtime_encode"] for t in packed},
            "best_threads": winner,
            "gain_vs_1_thread": packed[winner]["realtime_encode"] / packed[min(packed)]["realtime_encode"],
        }
        # one run per config on a shared VM varies by a few per cent: call smaller gaps a tie
        rates = [run["realtime_encode"] for run in packed.values()]
        threads_verdict["tie"] = max(rates) / min(rates) - 1 < THREADS_TIE
    for run in best.values():
        run["realtime_per_ray_cpu"] = run["realtime_encode"] / run["workers"]
        run["realtime_per_busy_core"] = run["realtime_encode"] / run["cores_busy"]
    return {"source": source.name, "height": height, "ladder": list(ladder), "seconds": args.scaling_seconds,
            "chunk_seconds": args.chunk_seconds, "order": [f"{w}w-{t}t" for w, t in order], "runs": best,
            "speedup": speedup, "threads_verdict": threads_verdict,
            "target_speedup": TARGET_SPEEDUP,
            "speedup_pass": None if speedup is None else speedup["encode_throughput_ratio"] >= TARGET_SPEEDUP}


def section_overhead(bench: Bench) -> dict[str, Any]:
    """(c): many one-segment chunks of a 128x72 clip, one rung: the encode is negligible, the rest is overhead."""
    args = bench.args
    source = ensure_media(128, 72, args.overhead_chunks, grain=False, audio=False)
    runs = {}
    for w in sorted(set(args.workers)):
        options = _options(ladder=(72,), segment_seconds=1, chunk_seconds=1, parallelism=max(args.workers),
                           preset=args.preset)
        runs[w] = bench.run_job(f"overhead-{w}w", source, options, w)
    top = runs[max(runs)]
    return {"source": source.name, "size": "128x72", "chunks": top["chunks"], "runs": runs,
            "target_ms": TARGET_OVERHEAD_MS,
            "pass_mean": top["overhead_capacity_ms"] < TARGET_OVERHEAD_MS
            and top["overhead_latency_ms"]["mean"] < TARGET_OVERHEAD_MS,
            "pass_p95": top["overhead_latency_ms"]["p95"] < TARGET_OVERHEAD_MS}


def section_sweep(bench: Bench) -> dict[str, Any]:
    """(d): the 1080p 4-rung ladder with audio at each chunk length, all workers, product scheduling."""
    from kinoray.media.pipeline import prepare_asset

    args = bench.args
    source = ensure_media(1920, 1080, args.sweep_seconds, audio=True)
    base = _options(ladder=FULL_LADDER, segment_seconds=args.sweep_segment_seconds, preset=args.preset,
                    parallel_renditions=True)
    t0 = time.perf_counter()
    prepare_asset(str(source), replace(base, parallelism=max(args.workers)))  # probe + keyframe index + plan
    prepare = {"seconds": time.perf_counter() - t0, "duration_s": args.sweep_seconds,
               "what": "prepare_asset (probe + keyframe index + plan) in the driver, page cache warm afterwards"}
    runs = {}
    for chunk in args.sweep_chunks:
        options = replace(base, chunk_seconds=chunk)  # parallelism None: the job uses its worker count
        runs[f"{chunk:g}"] = bench.run_job(f"sweep-{chunk:g}s", source, options, max(args.workers))
    best = min(runs, key=lambda k: runs[k]["wall_s"]) if runs else None
    return {"source": source.name, "seconds": args.sweep_seconds, "segment_seconds": args.sweep_segment_seconds,
            "workers": max(args.workers), "prepare": prepare, "runs": runs, "best_chunk_seconds": best}


# ------------------------------------------------------------------------------------------------ model

MODEL_FORMULA = (
    "n = ceil(D / L); t_chunk = c*L + o; "
    "T(N) = s0 + i*D + max(ceil(n / N) * t_chunk, a*D) + k*D; "
    "CPU: smallest N (1-CPU workers) with T(N) <= B. "
    "NVENC: c_gpu = s * P * f / F (a GPU's F 1080p-equivalent frames/s shared by its s sessions), "
    "t_chunk = c_gpu*L + o, N = G*s workers; smallest G with T <= B"
)
MODEL_SYMBOLS = {
    "D": "source duration to transcode, s (model input)",
    "B": "turnaround budget, s (model input)",
    "L": "chunk length, s (measured mean chunk length of a sweep run)",
    "n": "number of chunks",
    "c": "worker-seconds per content-second of the 1080p 4-rung ladder on one 1-CPU worker, all workers busy "
         "(measured: sum of worker-side chunk seconds / source seconds, pre-roll decode included)",
    "o": "per-chunk scheduling overhead, s of worker capacity (measured: overhead section, capacity measure)",
    "s0": "fixed start-up: worker pool start + encoder probes (measured: plan stage - driver prepare time)",
    "i": "probe + keyframe index + plan, s per content-second (measured in the driver on the sweep source)",
    "k": "packaging (stitch + manifests + static MP4, in the coordinator), s per content-second (measured)",
    "a": "audio item dispatch->done, s per content-second (measured; runs on one worker alongside chunks)",
    "P": "pixels of the ladder per frame / 1920x1080",
    "f": "frame rate of the source, frames/s",
    "F": "NVENC throughput per GPU in 1080p-equivalent frames/s (ASSUMPTION unless you pass a measurement)",
    "s": "GPU encoder sessions (workers) per GPU (ClusterSettings.gpu_sessions_per_gpu)",
}


def _solve(n: int, t_chunk: float, fixed: float, audio: float, budget: float, unit: int) -> dict[str, Any]:
    """Smallest count of units (each ``unit`` workers) meeting ``budget``; or why none does."""
    best_possible = fixed + max(t_chunk, audio)
    for units in range(1, n + 1):
        workers = units * unit
        total = fixed + max(math.ceil(n / workers) * t_chunk, audio)
        if total <= budget:
            return {"units": units, "workers": workers, "seconds": total, "reachable": True}
        if workers >= n:
            break
    return {"units": None, "workers": None, "seconds": best_possible, "reachable": False,
            "why": f"even one chunk per worker takes {best_possible:.0f} s (fixed stages {fixed:.0f} s + "
                   f"one chunk {t_chunk:.1f} s); shorten chunks or speed up the fixed stages"}


def build_model(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    sweep = results.get("sweep")
    overhead = results.get("overhead")
    scaling = results.get("scaling")
    basis: list[dict[str, Any]] = []
    index_rate = None
    if sweep and sweep["runs"]:
        basis = list(sweep["runs"].values())
        index_rate = sweep["prepare"]["seconds"] / sweep["prepare"]["duration_s"]
    elif scaling and scaling["height"] == 1080:
        basis = [r for r in scaling["runs"].values() if r["threads"] == 1 and r["workers"] == max(args.workers)]
    if not basis:
        return {"skipped": "needs a 1080p 4-rung measurement: run the sweep section (or scaling without --quick)"}
    inputs: dict[str, Any] = {}
    if overhead:
        top = overhead["runs"][max(overhead["runs"])]
        o = top["overhead_capacity_ms"] / 1000
        inputs["o"] = {"value": o, "source": f"measured: overhead section, {top['workers']} workers, capacity"}
        per_chunk_driver = top["driver_encode_cpu_ms_per_chunk"] / 1000
        inputs["coordinator_cpu_per_chunk_s"] = {"value": per_chunk_driver,
                                                 "source": "measured: driver CPU during the encode stage / chunks"}
    else:
        o, per_chunk_driver = TARGET_OVERHEAD_MS / 1000, None
        inputs["o"] = {"value": o, "source": "ASSUMPTION (overhead section not run): the 50 ms target"}
    if index_rate is None:
        index_rate = 0.0
        inputs["i"] = {"value": 0.0, "source": "not measured (no sweep); counted inside s0"}
    else:
        inputs["i"] = {"value": index_rate, "source": f"measured: prepare_asset on the {sweep['seconds']:g} s "
                                                      "sweep source"}
    pixels = sum(SIZES[h][0] * SIZES[h][1] for h in FULL_LADDER) / (1920 * 1080)
    fps = FPS
    gpu_fps, sessions = args.nvenc_fps_per_gpu, args.gpu_sessions_per_gpu
    c_gpu = sessions * pixels * fps / gpu_fps
    D, B = args.model_source_seconds, args.model_budget_seconds
    inputs.update({
        "D": {"value": D, "source": "model input (--model-source-seconds)"},
        "B": {"value": B, "source": "model input (--model-budget-seconds)"},
        "P": {"value": pixels, "source": "computed: " + " + ".join(f"{SIZES[h][0]}x{SIZES[h][1]}"
                                                                    for h in FULL_LADDER) + " over 1920x1080"},
        "f": {"value": fps, "source": "the generated sources' frame rate"},
        "F": {"value": gpu_fps, "source": "ASSUMPTION (--nvenc-fps-per-gpu)"
              + (" — default: one NVENC engine at preset P4, H.264 1080p; not measured here"
                 if gpu_fps == DEFAULT_NVENC_FPS else " — as passed")},
        "s": {"value": sessions, "source": "--gpu-sessions-per-gpu (ClusterSettings default)"},
    })
    rows = []
    for run in basis:
        duration = run["duration_s"]
        L = run["chunk_s_mean"]
        c = run["cost_per_content_s"]
        s0 = max(0.0, run["stage_seconds"]["plan"] - index_rate * duration)
        k = run["stage_seconds"]["package"] / duration
        a = run["audio_latency_s"] / duration
        n = math.ceil(D / L)
        fixed = s0 + index_rate * D + k * D
        cpu_chunk = c * L + o
        gpu_chunk = c_gpu * L + o
        cpu = _solve(n, cpu_chunk, fixed, a * D, B, 1)
        gpu = _solve(n, gpu_chunk, fixed, a * D, B, sessions)
        row = {"L": L, "chunk_seconds_requested": run["chunk_seconds_requested"], "n": n, "c": c, "s0": s0,
               "k": k, "a": a, "fixed_s": fixed, "t_chunk_cpu_s": cpu_chunk, "t_chunk_gpu_s": gpu_chunk,
               "cpu": cpu, "gpu": {**gpu, "gpus": gpu["units"]},
               "fluid_cpu_workers": (n * cpu_chunk + a * D) / (B - fixed) if B > fixed else None,
               "measured_on": f"{run['label']} ({duration:g} s source, {run['workers']} workers)"}
        if per_chunk_driver is not None and cpu["workers"]:
            # one coordinator thread dispatches every chunk: N workers each finishing a chunk every t_chunk s
            needed = cpu["workers"] / cpu_chunk
            row["coordinator"] = {"dispatch_rate_needed_per_s": needed,
                                  "coordinator_core_share": needed * per_chunk_driver,
                                  "ok": needed * per_chunk_driver < 0.5}
        rows.append(row)
    cpu_rows = [r for r in rows if r["cpu"]["reachable"]]
    gpu_rows = [r for r in rows if r["gpu"]["reachable"]]
    answer = {
        "cpu": min(cpu_rows, key=lambda r: (r["cpu"]["workers"], r["cpu"]["seconds"])) if cpu_rows else None,
        "gpu": min(gpu_rows, key=lambda r: (r["gpu"]["units"], r["gpu"]["seconds"])) if gpu_rows else None,
    }
    return {
        "formula": MODEL_FORMULA, "symbols": MODEL_SYMBOLS, "inputs": inputs, "rows": rows,
        "answer": {"cpu_workers": answer["cpu"]["cpu"]["workers"] if answer["cpu"] else None,
                   "cpu_chunk_seconds": answer["cpu"]["L"] if answer["cpu"] else None,
                   "cpu_seconds": answer["cpu"]["cpu"]["seconds"] if answer["cpu"] else None,
                   "nvenc_gpus": answer["gpu"]["gpu"]["units"] if answer["gpu"] else None,
                   "nvenc_chunk_seconds": answer["gpu"]["L"] if answer["gpu"] else None,
                   "nvenc_seconds": answer["gpu"]["gpu"]["seconds"] if answer["gpu"] else None},
        "assumptions": [
            f"F = {gpu_fps:g} 1080p-equivalent frames/s per GPU is an assumption (--nvenc-fps-per-gpu), not "
            "measured: NVENC is taken as the GPU bottleneck (NVDEC decode, CUDA scaling, the GPU worker's one "
            "CPU for demux and frame copies keep up). Data-centre GPUs without NVENC (H100/H200/A100) encode "
            "on CPU: use the CPU row for them.",
            "c is measured on this machine's cores with every core busy; other CPUs scale it by their "
            "per-core x264 speed. s0, i, k, a are measured on a shorter source and scaled linearly with D.",
            "packaging (k) runs in the coordinator, after the last chunk, and does not shrink with workers.",
            "F is steady-state encode speed: opening NVENC sessions (one per rung per chunk) is not in it; with "
            "short chunks on GPUs that start-up adds to o.",
            "the audio item shares a worker with chunks; it is counted only as a lower bound (max with the "
            "chunk makespan).",
        ],
        "caveat": None if (results.get("sweep") or {}).get("seconds", 0) >= 300 else
        "the fixed-stage rates (s0, i, k, a) come from a short source and carry start-up costs: quote the "
        "model from a full sweep (--sweep-seconds 600)",
    }


# --------------------------------------------------------------------------------------------- reporting


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def _yes(flag: bool | None) -> str:
    return "–" if flag is None else ("[green]yes[/]" if flag else "[red]no[/]")


def print_report(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    machine = report["machine"]
    console.print(f"[bold]machine[/]: {machine['cpu_count']} CPUs ({machine['cpu_model']}), Ray CPUs "
                  f"{machine['ray_cpus']}, load at start {'/'.join(f'{x:.2f}' for x in machine['loadavg_at_start'])}")
    sections = report["sections"]
    scaling = sections.get("scaling")
    if scaling:
        table = Table(title=f"(a) worker scaling — {scaling['seconds']:g} s {scaling['height']}p → "
                            f"{len(scaling['ladder'])}-rung ladder, {scaling['chunk_seconds']:g} s chunks, 1 thread/encoder")
        for column in ("workers", "chunks", "encode s", "chunks/s", "× realtime", "job wall s", "× rt (job)",
                       "packing", "foreign CPU s"):
            table.add_column(column, justify="right")
        for run in scaling["runs"].values():
            if run["threads"] != 1:
                continue
            table.add_row(str(run["workers"]), str(run["chunks"]), _fmt(run["encode_s"], ".1f"),
                          _fmt(run["chunks_per_s"], ".3f"), _fmt(run["realtime_encode"]), _fmt(run["wall_s"], ".1f"),
                          _fmt(run["realtime_job"]), _fmt(run["packing"]), _fmt(run["foreign_cpu_s"], ".1f"))
        console.print(table)
        speedup = scaling["speedup"]
        if speedup:
            console.print(f"speed-up {speedup['workers'][1]}w/{speedup['workers'][0]}w: encode-stage throughput "
                          f"×{speedup['encode_throughput_ratio']:.2f} (target ≥ {TARGET_SPEEDUP}: "
                          f"{_yes(scaling['speedup_pass'])}), whole job ×{speedup['job_wall_ratio']:.2f}; "
                          f"parallel efficiency {speedup['parallel_efficiency']:.2f}")
        if scaling["threads_verdict"]:
            table = Table(title="(b) encoder threads per rendition")
            for column in ("workers", "threads", "encode s", "× realtime", "× rt / Ray CPU", "cores busy",
                           "× rt / busy core", "CPU-s per content-s", "foreign CPU s"):
                table.add_column(column, justify="right")
            for run in sorted(scaling["runs"].values(), key=lambda r: (r["threads"], r["workers"])):
                table.add_row(str(run["workers"]), str(run["threads"]), _fmt(run["encode_s"], ".1f"),
                              _fmt(run["realtime_encode"]), _fmt(run["realtime_per_ray_cpu"]),
                              _fmt(run["cores_busy"]), _fmt(run["realtime_per_busy_core"]),
                              _fmt(run["cpu_per_content_s"]), _fmt(run["foreign_cpu_s"], ".1f"))
            console.print(table)
            verdict = scaling["threads_verdict"]
            if verdict["tie"]:
                rates = verdict["realtime_by_threads"]
                base = rates[min(rates)]
                gaps = ", ".join(f"{t} vs {min(rates)} thread(s) {rates[t] / base - 1:+.1%}" for t in rates
                                 if t != min(rates))
                best = (f"a tie ({gaps}: under the {THREADS_TIE:.0%} noise margin; --repeats 3 to separate "
                        "them)")
            else:
                best = (f"{verdict['best_threads']} thread(s) per encoder "
                        f"(×{verdict['gain_vs_1_thread']:.2f} vs 1 thread)")
            console.print(f"best throughput with every core reserved ({verdict['workers']} workers): {best}. With "
                          "fewer workers than cores, extra threads borrow idle cores: compare '× rt / busy core'.")
    overhead = sections.get("overhead")
    if overhead:
        table = Table(title=f"(c) per-chunk scheduling overhead — {overhead['size']}, 1 s chunks, one rung "
                            f"(target < {TARGET_OVERHEAD_MS:g} ms)")
        for column in ("workers", "chunks", "encode s", "Σ worker s", "worker s/chunk", "capacity ms/chunk",
                       "latency ms mean", "p50", "p95", "max", "driver CPU ms/chunk", "foreign CPU s"):
            table.add_column(column, justify="right")
        for run in overhead["runs"].values():
            lat = run["overhead_latency_ms"]
            table.add_row(str(run["workers"]), str(run["chunks"]), _fmt(run["encode_s"], ".2f"),
                          _fmt(run["worker_chunk_s_sum"], ".2f"), _fmt(run["worker_chunk_s_mean"], ".3f"),
                          _fmt(run["overhead_capacity_ms"], ".1f"), _fmt(lat["mean"], ".1f"), _fmt(lat["p50"], ".1f"),
                          _fmt(lat["p95"], ".1f"), _fmt(lat["max"], ".1f"),
                          _fmt(run["driver_encode_cpu_ms_per_chunk"], ".1f"), _fmt(run["foreign_cpu_s"], ".1f"))
        console.print(table)
        console.print(f"overhead < {TARGET_OVERHEAD_MS:g} ms at {max(overhead['runs'])} workers: mean (both "
                      f"measures) {_yes(overhead['pass_mean'])}, latency p95 {_yes(overhead['pass_p95'])}")
    sweep = sections.get("sweep")
    if sweep:
        table = Table(title=f"(d) chunk-length sweep — {sweep['seconds']:g} s 1080p → 4-rung ladder + audio, "
                            f"{sweep['workers']} workers, {sweep['segment_seconds']:g} s segments")
        for column in ("chunk s", "actual s", "chunks", "wall s", "plan", "encode", "package", "× realtime",
                       "worker s / content s", "packing", "pre-roll frames", "foreign CPU s"):
            table.add_column(column, justify="right")
        for key, run in sweep["runs"].items():
            stages = run["stage_seconds"]
            table.add_row(key, _fmt(run["chunk_s_mean"], ".1f"), str(run["chunks"]), _fmt(run["wall_s"], ".1f"),
                          _fmt(stages.get("plan"), ".1f"), _fmt(stages.get("encode"), ".1f"),
                          _fmt(stages.get("package"), ".1f"), _fmt(run["realtime_job"]),
                          _fmt(run["cost_per_content_s"]), _fmt(run["packing"]), str(run["preroll_frames"]),
                          _fmt(run["foreign_cpu_s"], ".1f"))
        console.print(table)
        console.print(f"fastest: {sweep['best_chunk_seconds']} s chunks; driver prepare (probe+index+plan) "
                      f"{sweep['prepare']['seconds']:.2f} s for {sweep['seconds']:g} s of source")
    model = report["model"]
    if "skipped" in model:
        console.print(f"(e) model skipped: {model['skipped']}")
    else:
        console.print(f"[bold](e) model[/]: {model['formula']}")
        table = Table(title="model inputs")
        for column in ("symbol", "value", "source"):
            table.add_column(column)
        for name, item in model["inputs"].items():
            value = item["value"]
            table.add_row(name, _fmt(value, ".4g") if isinstance(value, float) else str(value), item["source"])
        console.print(table)
        D, B = model["inputs"]["D"]["value"], model["inputs"]["B"]["value"]
        table = Table(title=f"workers for {D / 3600:g} h of 1080p → 4-rung ladder in ≤ {B:g} s")
        for column in ("L s", "n", "c", "s0 s", "k s/s", "fixed s", "t_chunk CPU s", "CPU workers", "T CPU s",
                       "t_chunk NVENC s", "NVENC GPUs", "T NVENC s", "measured on"):
            table.add_column(column, justify="right")
        for row in model["rows"]:
            cpu, gpu = row["cpu"], row["gpu"]
            table.add_row(_fmt(row["L"], ".1f"), str(row["n"]), _fmt(row["c"], ".3f"), _fmt(row["s0"], ".1f"),
                          _fmt(row["k"], ".4f"), _fmt(row["fixed_s"], ".0f"), _fmt(row["t_chunk_cpu_s"], ".1f"),
                          str(cpu["workers"]) if cpu["reachable"] else "[red]unreachable[/]",
                          _fmt(cpu["seconds"], ".0f"), _fmt(row["t_chunk_gpu_s"], ".2f"),
                          str(gpu["units"]) if gpu["reachable"] else "[red]unreachable[/]",
                          _fmt(gpu["seconds"], ".0f"), row["measured_on"])
        console.print(table)
        ans = model["answer"]
        if ans["cpu_workers"]:
            console.print(f"→ CPU: {ans['cpu_workers']} one-CPU workers with {ans['cpu_chunk_seconds']:.0f} s chunks "
                          f"({ans['cpu_seconds']:.0f} s)")
            row = next(r for r in model["rows"] if r["L"] == ans["cpu_chunk_seconds"])
            if "coordinator" in row:
                coord = row["coordinator"]
                console.print(f"  coordinator: {coord['dispatch_rate_needed_per_s']:.1f} chunks/s to dispatch at "
                              f"{ans['cpu_workers']} workers = {coord['coordinator_core_share']:.1%} of one core "
                              "(measured coordinator CPU per chunk)")
        else:
            console.print("→ CPU: not reachable at the measured chunk lengths (see 'why' in the JSON)")
        if ans["nvenc_gpus"]:
            console.print(f"→ NVENC: {ans['nvenc_gpus']} GPU(s) with {ans['nvenc_chunk_seconds']:.0f} s chunks "
                          f"({ans['nvenc_seconds']:.0f} s) [yellow]assuming F = "
                          f"{model['inputs']['F']['value']:g} 1080p-eq frames/s per GPU (not measured)[/]")
        else:
            console.print("→ NVENC: not reachable at the measured chunk lengths (see 'why' in the JSON)")
        if model.get("caveat"):
            console.print(f"[yellow]caveat:[/] {model['caveat']}")
    disturbed = report["disturbed_runs"]
    if disturbed:
        console.print(f"[bold red]warning:[/] other programs took > {QUIET_SHARE:.0%} of the machine's CPU during: "
                      f"{', '.join(disturbed)} — rerun on a quiet machine before trusting those numbers")
    console.print(f"JSON: {report['json']}  (total {report['total_runtime_s']:.0f} s)")


# ------------------------------------------------------------------------------------------------- main


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("kinoray", "ray", "av", "torch", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    import av

    out["pyav_libavcodec"] = ".".join(map(str, av.library_versions["libavcodec"]))
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


SECTIONS = ("scaling", "threads", "overhead", "sweep")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from kinoray.settings import ClusterSettings

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 720p 16 s scaling clip with 4 s chunks, 60 overhead chunks, 20 s sweep at "
                             "5,10 s chunks")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="Ray CPUs (default: all)")
    parser.add_argument("--workers", type=_ints, default=None, help="worker counts to compare (default 1,2)")
    parser.add_argument("--threads", type=_ints, default=(1, 2), help="encoder threads to compare (default 1,2)")
    parser.add_argument("--repeats", type=int, default=1, help="scaling/threads runs per config; best kept")
    parser.add_argument("--preset", default="veryfast", help="x264 preset for every run (default veryfast)")
    parser.add_argument("--scaling-seconds", type=float, default=None, help="scaling clip length (60; quick 16)")
    parser.add_argument("--chunk-seconds", type=float, default=None, help="scaling chunk length (8; quick 4)")
    parser.add_argument("--overhead-chunks", type=int, default=None, help="1 s chunks in (c) (200; quick 60)")
    parser.add_argument("--sweep-seconds", type=float, default=None, help="sweep source length (600; quick 20)")
    parser.add_argument("--sweep-chunks", type=_floats, default=None, help="chunk lengths (5,10,20,40; quick 5,10)")
    parser.add_argument("--sweep-segment-seconds", type=float, default=5.0,
                        help="segment length in the sweep (5: every default chunk length is whole segments)")
    parser.add_argument("--model-source-seconds", type=float, default=3600.0)
    parser.add_argument("--model-budget-seconds", type=float, default=300.0)
    parser.add_argument("--nvenc-fps-per-gpu", type=float, default=DEFAULT_NVENC_FPS,
                        help="ASSUMED 1080p-equivalent frames/s one GPU's NVENC encodes (default 600: one engine, P4)")
    parser.add_argument("--gpu-sessions-per-gpu", type=int, default=ClusterSettings().gpu_sessions_per_gpu)
    parser.add_argument("--keep-outputs", action="store_true", help="keep each run's HLS/DASH output")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scaling.json")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "scaling")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"scaling_seconds": 16 if quick else 60, "chunk_seconds": 4 if quick else 8,
                "overhead_chunks": 60 if quick else 200, "sweep_seconds": 20 if quick else 600,
                "sweep_chunks": (5.0, 10.0) if quick else (5.0, 10.0, 20.0, 40.0), "workers": (1, 2)}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {sorted(unknown)}")
    if max(args.workers) > args.cores:
        parser.error(f"--workers {max(args.workers)} exceeds --cores {args.cores}")
    return args


def main(argv: list[str] | None = None) -> None:
    import ray
    from rich.console import Console

    from kinoray.cluster import ensure_ray

    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=180)
    started = time.perf_counter()
    load_start = os.getloadavg()
    console.print(f"[bold]kinoray scaling[/] — sections {', '.join(args.sections)}, workers {args.workers}, "
                  f"{args.cores} Ray CPUs, preset {args.preset}{' (quick)' if args.quick else ''}")
    console.print("fairness: one Ray session; a fresh worker pool per job; warm-up job discarded; ABBA order")
    results: dict[str, Any] = {}
    ensure_ray(args.cores)
    try:
        resources = ray.cluster_resources()
        bench = Bench(args, console)
        console.print("[cyan]warm-up[/]")
        warm = warm_up(bench)
        if "scaling" in args.sections or "threads" in args.sections:
            threads = args.threads if "threads" in args.sections else (1,)
            if "scaling" not in args.sections and 1 not in threads:
                threads = (1, *threads)
            console.print("[cyan](a/b) worker scaling and encoder threads[/]")
            results["scaling"] = section_scaling(bench, tuple(dict.fromkeys(threads)))
        if "overhead" in args.sections:
            console.print("[cyan](c) per-chunk scheduling overhead[/]")
            results["overhead"] = section_overhead(bench)
        if "sweep" in args.sections:
            console.print("[cyan](d) chunk-length sweep[/]")
            results["sweep"] = section_sweep(bench)
    finally:
        ray.shutdown()
    model = build_model(args, results)
    runs = [*((results.get("scaling") or {}).get("runs") or {}).values(),
            *((results.get("overhead") or {}).get("runs") or {}).values(),
            *((results.get("sweep") or {}).get("runs") or {}).values()]
    report = {
        "benchmark": "scaling",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "total_runtime_s": time.perf_counter() - started,
        "json": str(args.out),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpu_count": os.cpu_count(), "cpu_model": tvf._cpu_model(), "ray_cpus": resources.get("CPU"),
                    "ray_resources": resources, "memory_gb": os.sysconf("SC_PHYS_PAGES") * tvf.PAGE / 2**30,
                    "loadavg_at_start": load_start, "loadavg_at_end": os.getloadavg(),
                    "platform": platform.platform()},
        "versions": _versions(),
        "git": tvf._git_state(),
        "fairness": "one local Ray session for all runs; each TranscodeJob starts and kills its own worker actors "
                    "(1 CPU each), so none inherits a warm worker; one discarded warm-up job first; scaling/threads "
                    "configs run in ABBA order (workers ascending, then descending), best of --repeats by encode "
                    "wall; scaling runs fix parallelism at the largest worker count so every worker count gets "
                    "the same chunks",
        "definitions": {
            "encode_s": "TranscodeResult.stage_seconds['encode']: first dispatch to last result (workers started)",
            "chunks_per_s": "chunks / encode_s",
            "realtime_encode": "source seconds / encode_s; realtime_job = source seconds / whole job wall",
            "speedup": "chunks_per_s at the most workers / at the fewest (threads=1); target >= 1.8 for 2/1",
            "packing": "sum of worker-side chunk seconds / (encode_s x workers)",
            "cores_busy": "TranscodeResult.encode_cpu_seconds (chunk CPU, all threads) / encode_s",
            "realtime_per_ray_cpu": "realtime_encode / workers (each worker reserves 1 Ray CPU)",
            "realtime_per_busy_core": "realtime_encode / cores_busy",
            "cost_per_content_s": "sum of worker-side chunk seconds (ChunkEvent 'done'.seconds) / source seconds",
            "overhead_capacity_ms": "(encode_s x workers - sum worker-side chunk seconds - audio item time) / "
                                    "chunks: worker capacity per chunk not spent inside transcode_chunk",
            "overhead_latency_ms": "per chunk: ChunkEvent done.at - dispatched.at - done.seconds",
            "driver_encode_cpu_ms_per_chunk": "coordinator process CPU between the ENCODING and PACKAGING "
                                              "records (sampler thread's share removed) / chunks",
            "foreign_cpu_s": "machine busy CPU (/proc/stat) during the job minus the driver's process tree "
                             "(driver, Ray daemons, workers) and the sampler",
            "quiet": "foreign_share = foreign_cpu_s / (wall x cpu_count) <= 0.05; other runs are listed in "
                     "disturbed_runs",
        },
        "warm_up": warm,
        "sections": results,
        "model": model,
        "targets": {
            "speedup_2w_over_1w_ge_1_8": (results.get("scaling") or {}).get("speedup_pass"),
            "overhead_mean_lt_50ms": (results.get("overhead") or {}).get("pass_mean"),
            "overhead_p95_lt_50ms": (results.get("overhead") or {}).get("pass_p95"),
        },
        "disturbed_runs": [run["label"] for run in runs if not run["quiet"]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_json_safe(report), indent=2, default=str))
    print_report(console, report)


if __name__ == "__main__":
    main()
