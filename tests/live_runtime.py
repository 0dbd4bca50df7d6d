"""The live runtime for tests: the API with its job runner and a one-rung live ladder, and an RTMP ingest on a
free port — what the live test modules share (each module makes its own, with its own settings)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

#: One 240p rung, encoded as fast as libx264 goes on half a CPU; 1 s segments for reduced, 2 s for standard.
LIVE_SETTINGS: dict[str, Any] = {"heights": [240], "encoder": "libx264", "preset": "ultrafast",
                                 "cpus_per_stream": 0.5, "segment_seconds": {"reduced": 1.0, "standard": 2.0}}


@contextmanager
def live_api(api_backend: Any, directory: Path, *, live: dict[str, Any] | None = None,
             **sections: dict[str, Any]) -> Iterator[Any]:
    """:func:`tests.api_server.api_with_runner` with :data:`LIVE_SETTINGS` (updated by ``live``) and a fast
    runner; skips on PostgreSQL (the live runtime runs on one backend; the control plane's tests cover both)."""
    if api_backend.kind != "sqlite":
        pytest.skip("the live runtime runs on one backend; the control plane's tests cover both")
    from tests.api_server import api_with_runner

    with api_with_runner(api_backend.new_url(), directory, serve={"poll_seconds": 0.1, "sweep_seconds": 0.5},
                         live={**LIVE_SETTINGS, **(live or {})}, **sections) as server:
        yield server


@contextmanager
def live_ingest(api: Any) -> Iterator[Any]:
    """A :class:`~kinoray.serve.live_ingest.LiveIngest` on ``api``'s platform, on a free port (``.port``)."""
    from kinoray.serve.live_ingest import LiveIngest

    service = LiveIngest(api.platform, host="127.0.0.1", port=0, poll_seconds=0.5)
    service.port = service.start()
    try:
        yield service
    finally:
        service.stop()
