"""Rendition scaling with torch: the GPU path of a chunk (NVDEC decode → torch scale → encode).

Same contract as :class:`kinoray.media.frames.RenditionScaler` (one ``yuv420p`` frame per rendition, largest
first, rotation applied, cascaded 1080 → 720 → …), but the planes are resampled by
``torch.nn.functional.interpolate`` (bicubic with antialiasing) on ``device``. On a CUDA device the source
planes are uploaded once and every rung is computed there; the rungs then come back to host memory for the
encoder (NVENC through PyAV, or a CPU encoder on GPUs without NVENC). It also runs on ``cpu``, which is how
the CPU-only test suite checks it frame by frame against swscale.

torch is imported lazily: ``import kinoray`` never needs it.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from kinoray.media.frames import QUARTER_TURNS, even_yuv420p, plane_array, write_plane
from kinoray.media.ladder import Rendition
from kinoray.media.probe import VideoStreamInfo

__all__ = ["TorchRenditionScaler", "torch_device_available"]


def torch_device_available(device: str) -> tuple[bool, str]:
    """Whether torch can run on ``device`` ("cpu", "cuda", "cuda:1"), and why not."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dependency
        return False, f"torch is not installed: {e}"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return False, "torch sees no CUDA device"
        try:
            torch.zeros(1, device=device)
        except Exception as e:  # noqa: BLE001 - any CUDA init failure means unusable
            return False, f"CUDA device {device} unusable: {e}"
    return True, ""


class TorchRenditionScaler:
    """Turns decoded source frames into one ``yuv420p`` frame per rendition using torch on ``device``."""

    def __init__(self, video: VideoStreamInfo, renditions: tuple[Rendition, ...], device: str = "cuda") -> None:
        import torch

        if not renditions:
            raise ValueError("at least one rendition is needed")
        self.torch = torch
        self.device = torch.device(device)
        self.rotation = video.rotation
        self.renditions = renditions
        self.name = f"torch-{self.device.type}"

    def _planes(self, frame: av.VideoFrame) -> list[Any]:
        frame = even_yuv420p(frame)
        planes = []
        for index in range(3):
            tensor = self.torch.from_numpy(np.ascontiguousarray(plane_array(frame, index)))
            tensor = tensor.to(self.device, non_blocking=True)
            if self.rotation:
                tensor = self.torch.rot90(tensor, k=QUARTER_TURNS[self.rotation], dims=(0, 1))
            planes.append(tensor)
        return planes

    def _resize(self, plane: Any, height: int, width: int) -> Any:
        if tuple(plane.shape) == (height, width):
            return plane
        batch = plane[None, None].float()
        resized = self.torch.nn.functional.interpolate(batch, size=(height, width), mode="bicubic",
                                                       align_corners=False, antialias=True)
        return resized.round_().clamp_(0, 255).to(self.torch.uint8)[0, 0]

    def scale(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        """One frame per rendition, largest first; pts/time_base are left for the caller to set."""
        planes = self._planes(frame)
        outputs = []
        with self.torch.inference_mode():
            for rendition in self.renditions:
                width, height = rendition.width, rendition.height
                planes = [self._resize(planes[0], height, width),
                          self._resize(planes[1], height // 2, width // 2),
                          self._resize(planes[2], height // 2, width // 2)]
                scaled = av.VideoFrame(width, height, "yuv420p")
                for index, plane in enumerate(planes):
                    write_plane(scaled, index, plane.cpu().numpy())
                outputs.append(scaled)
        return outputs
