"""Markers, GPU skips and shared fixtures.

``gpu`` tests skip with a reason where no NVIDIA GPU is usable; set ``KINORAY_FAIL_WITHOUT_GPU=1`` on a GPU
machine to turn those skips into failures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.media import default_cache_dir


def _gpu_reason() -> str | None:
    from kinoray.encoders.nvenc import nvdec_hwaccel, pynvvideocodec_status

    if nvdec_hwaccel() is not None:
        return None
    ok, reason = pynvvideocodec_status()
    return None if ok else f"no usable NVIDIA GPU: {reason}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    reason = _gpu_reason()
    if reason is None:
        return
    if os.environ.get("KINORAY_FAIL_WITHOUT_GPU") == "1":
        return  # run them anyway: on a machine that should have a GPU, a missing one is a failure
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """Generated media, cached on disk across sessions (the generators are deterministic and versioned)."""
    return default_cache_dir()


@pytest.fixture(autouse=True)
def _fresh_settings():
    from kinoray.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
