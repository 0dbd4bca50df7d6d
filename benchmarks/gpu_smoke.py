"""GPU smoke check: the ``gpu``-marked tests, then NVDEC decode / CUDA scaling / chunk encode throughput.

    .venv/bin/python benchmarks/gpu_smoke.py                    # on a GPU machine (< 3 min)
    .venv/bin/python benchmarks/gpu_smoke.py --dry-run-on-cpu   # exercise every stage on CPU (numbers mean nothing)

Steps, on a machine with a usable NVIDIA GPU:

1. ``pytest -m gpu`` with ``KINORAY_FAIL_WITHOUT_GPU=1`` (a GPU test that would skip fails instead).
2. On a generated 1080p30 clip (the grain graph of ``transcode_vs_ffmpeg.py``, cached in
   ``benchmarks/results/media/``), frames per second of each stage:
   decode on CPU (1 thread, as a worker does) and with NVDEC (``nvdec_hwaccel()``); scaling to the 4-rung
   ladder with ``RenditionScaler`` (swscale, CPU) and ``TorchRenditionScaler(device="cuda")``; one
   ``transcode_chunk`` of the whole clip with encoder ``auto`` (NVENC where a session opens, else the CPU
   fallback — the table says which and why), NVDEC and the CUDA scaler; and a ``TranscodeJob`` on a local Ray
   (all CPUs and GPUs), which reports the encoder, decoders and scalers its workers used.

Without a GPU it prints ``no GPU: skipped (…)``, writes the JSON with the reason and exits 0. It exits 1 when the
tests fail or a stage errors. JSON: ``benchmarks/results/gpu_smoke.json``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import scaling  # noqa: E402  (cached inputs, versions)
from benchmarks import transcode_vs_ffmpeg as tvf  # noqa: E402  (cpu model)

LADDER = (1080, 720, 480, 360)
FPS = 30


def detect_gpu() -> dict[str, Any]:
    """What this machine offers: nvidia-smi's GPUs, torch CUDA, a real NVDEC decode, a real NVENC session."""
    from kinoray.encoders.nvenc import nvdec_hwaccel, pynvvideocodec_status
    from kinoray.encoders.registry import probe_backend
    from kinoray.media.torch_scale import torch_device_available

    info: dict[str, Any] = {"nvidia_smi": None, "gpus": []}
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            info["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
            info["gpus"] = [line.strip() for line in out.stdout.splitlines() if line.strip()] if not out.returncode else []
        except (OSError, subprocess.SubprocessError) as e:
            info["nvidia_smi"] = f"failed: {e}"
    torch_ok, torch_reason = torch_device_available("cuda")
    info["torch_cuda"] = torch_ok
    info["torch_reason"] = torch_reason or None
    if torch_ok:
        import torch

        info["torch_device"] = torch.cuda.get_device_name(0)
    info["nvdec"] = nvdec_hwaccel() is not None
    nvenc = probe_backend("h264", "nvenc")
    info["nvenc_h264"] = {"available": nvenc.available, "reason": nvenc.reason}
    ok, reason = pynvvideocodec_status()
    info["pynvvideocodec"] = {"available": ok, "reason": reason}
    info["present"] = bool(info["gpus"]) or torch_ok or info["nvdec"]
    if not info["present"]:
        info["reason"] = "; ".join(filter(None, [
            "nvidia-smi not found" if not smi else f"nvidia-smi lists no GPU ({info['nvidia_smi']})",
            f"torch: {torch_reason}", "NVDEC probe decode failed", f"NVENC: {nvenc.reason.split(': {')[0]}"]))
    return info


def run_gpu_tests(timeout: float) -> dict[str, Any]:
    env = {**os.environ, "KINORAY_FAIL_WITHOUT_GPU": "1"}
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc = -1
        output += f"\n(timed out after {timeout:.0f} s)"
    lines = [line for line in output.splitlines() if line.strip()]
    return {"command": " ".join(cmd[1:]), "env": "KINORAY_FAIL_WITHOUT_GPU=1", "returncode": rc,
            "passed": rc == 0, "summary": lines[-1] if lines else "", "seconds": time.perf_counter() - t0,
            "output_tail": "\n".join(lines[-40:])}


def _timed(stages: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one stage; its dict (with ``frames`` and ``seconds``) or its error goes into ``stages``."""
    print(f"  {name} …", flush=True)
    try:
        stages[name] = fn()
        if stages[name].get("frames") and stages[name].get("seconds"):
            stages[name]["fps"] = stages[name]["frames"] / stages[name]["seconds"]
            stages[name]["realtime"] = stages[name]["fps"] / FPS
    except Exception as e:  # noqa: BLE001 - a smoke check reports every stage's failure and goes on
        stages[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}


def decode(source: Path, hwaccel: Any | None) -> dict[str, Any]:
    import av

    kwargs = {"hwaccel": hwaccel} if hwaccel is not None else {}
    frames, fmt = 0, None
    t0 = time.perf_counter()
    with av.open(str(source), **kwargs) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for frame in container.decode(stream):
            fmt = fmt or frame.format.name
            frames += 1
    seconds = time.perf_counter() - t0
    return {"device": "nvdec" if hwaccel is not None else "cpu (1 thread)", "frames": frames, "seconds": seconds,
            "frame_format": fmt}


def decoded_frames(source: Path, count: int) -> list[Any]:
    import av

    with av.open(str(source)) as container:
        return list(itertools.islice(container.decode(video=0), count))


def scale(scaler: Any, frames: list[Any], warm: int = 3) -> dict[str, Any]:
    for frame in frames[:warm]:
        scaler.scale(frame)  # CUDA context, kernels, allocator
    t0 = time.perf_counter()
    for frame in frames:
        scaler.scale(frame)
    return {"device": scaler.name, "frames": len(frames), "seconds": time.perf_counter() - t0,
            "rungs": len(scaler.renditions)}


def chunk(source: Path, device: str, hwaccel: Any | None, torch_ok: bool, work: Path) -> dict[str, Any]:
    from kinoray.encoders import select_encoder
    from kinoray.media.frames import RenditionScaler
    from kinoray.media.pipeline import TranscodeOptions, prepare_asset
    from kinoray.media.torch_scale import TorchRenditionScaler
    from kinoray.media.transcode import transcode_chunk

    options = TranscodeOptions(codec="h264", encoder="auto", ladder=LADDER, chunk_seconds=10_000)
    asset = prepare_asset(str(source), options)
    assert asset.plan is not None
    choice = select_encoder("h264", "auto")
    maker = functools.partial(TorchRenditionScaler, device=device) if torch_ok else RenditionScaler
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    result = transcode_chunk(asset.plan, asset.plan.chunks[0], asset.ladder, choice.backend, work_dir=work,
                             options=options.encode_options(), hwaccel=hwaccel, scaler=maker)
    seconds = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    return {"device": f"{result.decoder} decode → {result.scaler} → {result.encoder}", "frames": result.frame_count,
            "seconds": seconds, "encoder": result.encoder, "decoder": result.decoder, "scaler": result.scaler,
            "fallback_from": choice.fallback_from, "fallback_reason": choice.fallback_reason,
            "cpu_seconds": result.cpu_seconds, "rungs": len(asset.ladder)}


def job(source: Path, cores: int | None, work: Path) -> dict[str, Any]:
    import ray

    from kinoray.cluster import TranscodeJob, ensure_ray
    from kinoray.media.pipeline import TranscodeOptions
    from kinoray.settings import Settings

    records: list[Any] = []
    ensure_ray(cores)
    try:
        resources = ray.cluster_resources()
        options = TranscodeOptions(codec="h264", encoder="auto", ladder=LADDER, segment_seconds=2, chunk_seconds=2)
        t0 = time.perf_counter()
        result = TranscodeJob(str(source), str(work / "out"), options, settings=Settings(data_dir=work / "data"),
                              on_update=records.append).run()
        seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    record = records[-1]
    return {"device": f"{'+'.join(result.decoders)} decode → {'+'.join(result.scalers)} → {result.encoder}",
            "frames": result.frames, "seconds": seconds, "encoder": result.encoder,
            "fallback_from": result.fallback_from, "fallback_reason": result.fallback_reason,
            "decoders": result.decoders, "scalers": result.scalers, "chunks": result.chunks,
            "workers": record.workers, "stage_seconds": result.stage_seconds,
            "ray_resources": {k: v for k, v in resources.items() if k in ("CPU", "GPU")}}


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=170)
    gpu = report["gpu"]
    tests = report.get("tests") or {}
    console.print(f"GPU: {', '.join(gpu['gpus']) or gpu.get('torch_device') or 'none'}; NVDEC "
                  f"{'yes' if gpu['nvdec'] else 'no'}; NVENC h264 "
                  f"{'yes' if gpu['nvenc_h264']['available'] else 'no (' + gpu['nvenc_h264']['reason'].split(': {')[0] + ')'}")
    if tests:
        status = "[green]passed[/]" if tests.get("passed") else ("[yellow]not run[/]" if tests.get("skipped")
                                                               else "[red]FAILED[/]")
        console.print(f"pytest -m gpu: {status} — {tests.get('summary', tests.get('skipped', ''))}")
    table = Table(title=f"{report['input']['seconds']:g} s 1080p30 → 4-rung ladder, stage throughput"
                        + (" [DRY RUN ON CPU: numbers mean nothing]" if report["dry_run"] else ""))
    for column, justify in (("stage", "left"), ("device / path", "left"), ("frames", "right"), ("s", "right"),
                            ("fps", "right"), ("× realtime", "right"), ("note", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for name, stage in report["stages"].items():
        if "error" in stage:
            table.add_row(name, "", "", "", "", "", f"[red]{stage['error']}[/]")
            continue
        note = ""
        if stage.get("fallback_from"):
            reason = str(stage["fallback_reason"]).split(": {")[0]  # the reason, not the option dump (in the JSON)
            note = f"fallback from {stage['fallback_from']}: {reason[:80]}"
        elif stage.get("skipped"):
            note = stage["skipped"]
        table.add_row(name, str(stage.get("device", "")), str(stage.get("frames", "")),
                      f"{stage['seconds']:.2f}" if "seconds" in stage else "",
                      f"{stage['fps']:.1f}" if "fps" in stage else "",
                      f"{stage['realtime']:.2f}" if "realtime" in stage else "", note)
    console.print(table)
    console.print(f"JSON: {report['json']}  (total {report['total_runtime_s']:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8, help="generated 1080p clip length (default 8)")
    parser.add_argument("--scale-frames", type=int, default=90, help="frames timed through each scaler")
    parser.add_argument("--skip-tests", action="store_true", help="skip pytest -m gpu")
    parser.add_argument("--skip-job", action="store_true", help="skip the TranscodeJob on Ray")
    parser.add_argument("--tests-timeout", type=float, default=240)
    parser.add_argument("--dry-run-on-cpu", action="store_true",
                        help="without a GPU: run every stage on CPU (torch on cpu, no NVDEC) to check this script")
    parser.add_argument("--cores", type=int, default=None, help="Ray CPUs for the job (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_smoke.json")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    gpu = detect_gpu()
    report: dict[str, Any] = {
        "benchmark": "gpu_smoke", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "json": str(args.out), "dry_run": bool(args.dry_run_on_cpu and not gpu["present"]),
        "machine": {"cpu_count": os.cpu_count(), "cpu_model": tvf._cpu_model(), "platform": platform.platform()},
        "versions": scaling._versions(), "gpu": gpu, "input": {"seconds": args.seconds, "size": "1920x1080",
                                                                "fps": FPS, "ladder": list(LADDER)},
        "stages": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not gpu["present"] and not args.dry_run_on_cpu:
        print(f"no GPU: skipped ({gpu['reason']})")
        report.update(skipped=True, reason=f"no GPU: {gpu['reason']}", ok=True,
                      total_runtime_s=time.perf_counter() - started)
        args.out.write_text(json.dumps(report, indent=2, default=str))
        print(f"JSON: {args.out}")
        return 0
    report["skipped"] = False

    if args.skip_tests or report["dry_run"]:
        report["tests"] = {"skipped": "--skip-tests" if args.skip_tests else "dry run without a GPU"}
    else:
        print("pytest -m gpu (KINORAY_FAIL_WITHOUT_GPU=1) …", flush=True)
        report["tests"] = run_gpu_tests(args.tests_timeout)
        print(report["tests"]["output_tail"])

    from kinoray.encoders.nvenc import nvdec_hwaccel
    from kinoray.media.frames import RenditionScaler
    from kinoray.media.ladder import build_ladder
    from kinoray.media.probe import probe
    from kinoray.media.torch_scale import TorchRenditionScaler

    source = scaling.ensure_media(1920, 1080, args.seconds, audio=True)
    report["input"]["file"] = source.name
    accel = nvdec_hwaccel()
    device = "cuda" if gpu["torch_cuda"] else "cpu"
    torch_ok = gpu["torch_cuda"] or report["dry_run"]
    stages = report["stages"]
    _timed(stages, "decode cpu", lambda: decode(source, None))
    if accel is not None:
        _timed(stages, "decode nvdec", lambda: decode(source, accel))
    else:
        stages["decode nvdec"] = {"skipped": "NVDEC probe failed", "device": "nvdec"}
    video = probe(str(source)).video
    assert video is not None
    ladder = build_ladder(video, LADDER, "h264")
    frames = decoded_frames(source, args.scale_frames)
    _timed(stages, "scale swscale", lambda: scale(RenditionScaler(video, ladder), frames))
    if torch_ok:
        _timed(stages, f"scale torch-{device}", lambda: scale(TorchRenditionScaler(video, ladder, device=device),
                                                              frames))
    else:
        stages["scale torch-cuda"] = {"skipped": f"torch: {gpu['torch_reason']}", "device": "torch-cuda"}
    frames.clear()  # ~3 MB a frame
    work = Path(tempfile.mkdtemp(prefix="kinoray-gpu-smoke-"))
    try:
        _timed(stages, "transcode_chunk (auto)", lambda: chunk(source, device, accel, torch_ok, work / "chunk"))
        if not args.skip_job:
            _timed(stages, "TranscodeJob on Ray (auto)",
                   lambda: job(source, args.cores or (2 if report["dry_run"] else None), work / "job"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    errors = [name for name, stage in stages.items() if "error" in stage]
    tests_ok = report["tests"].get("passed", True) if "skipped" not in report["tests"] else True
    report.update(ok=tests_ok and not errors, stage_errors=errors, total_runtime_s=time.perf_counter() - started)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print_report(report)
    for name in errors:
        print(f"{name} failed:\n{stages[name]['traceback']}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
