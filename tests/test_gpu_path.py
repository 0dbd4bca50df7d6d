"""The GPU worker path: NVDEC decode → torch scaling → NVENC (or, on GPUs without NVENC, CPU) encode.

The torch scaler is the same code on ``cpu`` and ``cuda``, so the CPU-only suite checks it against swscale
frame by frame; the ``gpu`` tests run the real device path and compare it with the CPU path's output.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from kinoray.encoders import get_backend, select_encoder
from kinoray.media.frames import ChunkDecodeStats, RenditionScaler, decode_chunk_frames, plane_array
from kinoray.media.pipeline import TranscodeOptions, prepare_asset, run_chunk
from kinoray.media.torch_scale import TorchRenditionScaler, torch_device_available
from kinoray.media.transcode import EncodeOptions, transcode_chunk
from tests import oracles
from tests.media import MATRIX, MediaSpec, make_media

CLIP = MediaSpec(name="gpu_path_clip", width=640, height=360, duration_s=Fraction(4), gop=30)
OPTIONS = TranscodeOptions(ladder=(360, 240, 144), segment_seconds=2, chunk_seconds=4, parallelism=1)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("clip", ["gpu_path_clip", "rotation_90"])
def test_torch_scaler_matches_swscale(clip: str, media_dir: Path) -> None:
    spec = CLIP if clip == CLIP.name else MATRIX[clip]
    asset = prepare_asset(str(make_media(spec, media_dir)), OPTIONS if clip == CLIP.name else
                          replace(OPTIONS, ladder=None))
    plan = asset.plan
    cpu, gpu_code = RenditionScaler(plan.video, asset.ladder), TorchRenditionScaler(plan.video, asset.ladder, "cpu")
    frames = 0
    for _, frame in decode_chunk_frames(plan, plan.chunks[0], ChunkDecodeStats()):
        for rendition, a, b in zip(asset.ladder, cpu.scale(frame), gpu_code.scale(frame), strict=True):
            assert (b.width, b.height, b.format.name) == (rendition.width, rendition.height, "yuv420p")
            assert (a.width, a.height) == (b.width, b.height)
            for plane in range(3):
                assert _psnr(plane_array(a, plane), plane_array(b, plane)) > 30, (rendition.name, plane)
        frames += 1
    assert frames == plan.chunks[0].frame_count


def test_chunk_encoded_through_torch_scaling_is_frame_exact(media_dir: Path, tmp_path: Path) -> None:
    asset = prepare_asset(str(make_media(CLIP, media_dir)), OPTIONS)
    chunk = asset.plan.chunks[0]
    result = transcode_chunk(asset.plan, chunk, asset.ladder, get_backend("h264", "libx264"), work_dir=tmp_path,
                             options=EncodeOptions(decoder="cpu"),
                             scaler=functools.partial(TorchRenditionScaler, device="cpu"))
    assert result.scaler == "torch-cpu"
    assert all(r.packets == chunk.frame_count for r in result.renditions)


# ---------------------------------------------------------------- on a GPU (skipped elsewhere) ---------------

@pytest.mark.gpu
def test_gpu_worker_probes_real_devices() -> None:
    from kinoray.cluster.workers import probe_worker

    capabilities = probe_worker("gpu")
    assert capabilities.nvdec, capabilities.notes
    assert capabilities.scaler == "torch-cuda", capabilities.notes
    # H100/A100-class GPUs have no NVENC: then the reason is recorded, and the CPU encoder is there instead.
    assert capabilities.can_encode("h264", "nvenc") or "h264/nvenc" in capabilities.unavailable
    assert capabilities.can_encode("h264", "libx264")


@pytest.mark.gpu
def test_nvdec_torch_cuda_chunk_matches_cpu_path(media_dir: Path, tmp_path: Path) -> None:
    """NVDEC decode + CUDA scaling + the auto encoder (NVENC, or x264 where there is none) gives exactly the
    CPU path's frames (count, keyframe grid) and pictures close to them."""
    ok, reason = torch_device_available("cuda")
    assert ok, reason
    source = make_media(CLIP, media_dir)
    asset = prepare_asset(str(source), OPTIONS)
    chunk = asset.plan.chunks[0]
    choice = select_encoder("h264", "auto")
    gpu = transcode_chunk(asset.plan, chunk, asset.ladder, choice.backend, work_dir=tmp_path / "gpu",
                          options=EncodeOptions(decoder="nvdec"),
                          scaler=functools.partial(TorchRenditionScaler, device="cuda"))
    cpu = run_chunk(asset.plan, chunk.index, asset.ladder, "h264", "libx264", str(tmp_path / "cpu"),
                    EncodeOptions(decoder="cpu"))
    assert gpu.decoder == "cuda" and gpu.scaler == "torch-cuda"
    for g, c in zip(gpu.renditions, cpu.renditions, strict=True):
        assert g.packets == c.packets == chunk.frame_count
        assert g.keyframe_frames == c.keyframe_frames


@pytest.mark.gpu
def test_cluster_job_uses_gpu_workers(media_dir: Path, tmp_path: Path) -> None:
    import ray

    from kinoray.cluster import TranscodeJob

    source = make_media(CLIP, media_dir)
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        job = TranscodeJob(str(source), str(tmp_path / "out"), replace(OPTIONS, parallelism=None))
        result = job.run()
    finally:
        ray.shutdown()
    assert "cuda" in result.decoders and "torch-cuda" in result.scalers
    for rung in ("360p", "240p", "144p"):
        assert oracles.count_frames(tmp_path / "out" / rung / "index.m3u8") == 120
    with av.open(str(tmp_path / "out" / "highest.mp4")) as container:
        assert container.streams.video[0].frames == 120
