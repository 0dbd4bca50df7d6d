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
                                 "cpus_per_stream": 0.5, "segment_seconds": {"reduced": 1.0, "standard": 2.0},
                                 # the WHIP/WHEP listener on any free port (tests/test_live_whip.py picks one)
                                 "whip_host": "127.0.0.1", "whip_port": 0}


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


def create_live_stream(api: Any, **body: Any) -> dict[str, Any]:
    """``POST /video/v1/live-streams`` (public playback, reduced latency, then ``body``): the created ``data``."""
    created = api.client.post(f"{api.url}/video/v1/live-streams", json={
        "playback_policies": ["public"], "latency_mode": "reduced", **body}, timeout=30)
    assert created.status_code == 201, created.text
    return dict(created.json()["data"])


def get_live_stream(api: Any, live_stream_id: str) -> dict[str, Any]:
    """``GET /video/v1/live-streams/{id}``: its ``data``."""
    answer = api.client.get(f"{api.url}/video/v1/live-streams/{live_stream_id}", timeout=10)
    answer.raise_for_status()
    return dict(answer.json()["data"])


def paced_pipe(flv: bytes, speed: float) -> Any:
    """A :class:`~kinoray.live.pipe.TagPipe` fed ``flv``'s tags at ``speed`` × real time by a thread (a
    publisher without the network), then ended."""
    import io
    import threading
    import time

    from kinoray.live.pipe import TagPipe
    from kinoray.media.flv import read_header, read_tags

    pipe = TagPipe()

    def feed() -> None:
        source = io.BytesIO(flv)
        read_header(source)
        started = time.monotonic()
        for tag in read_tags(source):
            time.sleep(max(0.0, started + tag.timestamp / 1000 / speed - time.monotonic()))
            pipe.media(tag)
        pipe.ended(None)

    threading.Thread(target=feed, name="paced-publisher", daemon=True).start()
    return pipe
