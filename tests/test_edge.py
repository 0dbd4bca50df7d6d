"""The production delivery edge: ``kinoray edge`` (Granian, several worker processes) in front of the API, on
SQLite and PostgreSQL.

What the rest of the suite cannot see from its in-process edge (uvicorn, one process): files sent by Granian's
``pathsend`` (byte-identical to storage, checked by hash and by ffprobe decoding through the edge), the
worker processes sharing one port, the 5-second invalidation bound on *every* process (a deleted asset, a
removed playback id, a revoked signing key), the API forwarded through the edge port, host-based routing, and
HTTPS. Plus the forwarder's typed 502 when the API is down.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from kinoray.store.models import PlaybackPolicy
from tests.api_server import INVALIDATION_BOUND, eventually, self_signed
from tests.conftest import free_port
from tests.test_playback import IMMUTABLE, assert_error, ffmpeg_decodes, packaged_asset, publish
from tests.test_playback_signed import mint

WORKERS = 2
#: The edge fixture's metrics port, taken when the fixture starts (not at collection, long before: another
#: process could have the port by then).
METRICS_PORT: list[int] = []


@pytest.fixture(scope="module")
def edge(api, media_dir, tmp_path_factory):
    """``(server, edge url, media dir)``: the Granian edge with :data:`WORKERS` processes on the module's API."""
    _, media = packaged_asset(media_dir, tmp_path_factory.getbasetemp())
    METRICS_PORT[:] = [free_port()]
    process, url = api.start_granian_edge(workers=WORKERS, metrics_port=METRICS_PORT[0], metrics_scrape_seconds=1)
    try:
        yield api, url, media
    finally:
        process.stop()


def _fresh(method: str, url: str, **kwargs) -> requests.Response:
    """One request on a new connection (SO_REUSEPORT spreads new connections over the workers)."""
    with requests.Session() as session:
        return session.request(method, url, timeout=10, headers={"Connection": "close", **kwargs.pop("headers", {})},
                               **kwargs)


def _by_worker(url: str, want: Callable[[requests.Response], bool], *, rounds: int = 80,
               **kwargs) -> dict[str, list[bool]]:
    """Answers per worker (``X-Served-By``) over ``rounds`` fresh connections: whether each was what we want."""
    seen: dict[str, list[bool]] = {}
    for _ in range(rounds):
        answer = _fresh("GET", url, **kwargs)
        seen.setdefault(answer.headers["X-Served-By"], []).append(want(answer))
    return seen


def _all_workers(url: str, want: Callable[[requests.Response], bool], **kwargs) -> dict[str, list[bool]]:
    seen = _by_worker(url, want, **kwargs)
    assert len(seen) == WORKERS, f"only {sorted(seen)} answered over 80 connections"
    return seen


def test_files_are_sent_whole_by_every_worker_and_play(edge) -> None:
    server, url, media = edge
    _, (playback_id,) = publish(server, media)
    for name in ("480p/init.mp4", "480p/seg_00001.m4s", "240p/seg_00002.m4s", "audio/seg_00001.m4s"):
        expected = hashlib.sha256((media / name).read_bytes()).hexdigest()
        seen = _all_workers(f"{url}/{playback_id}/{name}", lambda a, e=expected: a.status_code == 200
                            and hashlib.sha256(a.content).hexdigest() == e)
        assert all(all(answers) for answers in seen.values()), seen
    answer = _fresh("GET", f"{url}/{playback_id}/highest.mp4")
    assert answer.content == (media / "highest.mp4").read_bytes()
    assert answer.headers["Cache-Control"] == IMMUTABLE and answer.headers["Access-Control-Allow-Origin"] == "*"
    assert int(answer.headers["Content-Length"]) == len(answer.content)
    ranged = _fresh("GET", f"{url}/{playback_id}/highest.mp4", headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == (media / "highest.mp4").read_bytes()[100:200]
    again = _fresh("GET", f"{url}/{playback_id}/480p/seg_00001.m4s", headers={"If-None-Match": answer.headers["ETag"]})
    assert again.status_code == 200  # another file's tag
    etag = _fresh("HEAD", f"{url}/{playback_id}/480p/seg_00001.m4s").headers["ETag"]
    assert _fresh("GET", f"{url}/{playback_id}/480p/seg_00001.m4s", headers={"If-None-Match": etag}).status_code == 304
    ffmpeg_decodes(f"{url}/{playback_id}.m3u8")  # Debian's ffmpeg plays the ladder through the edge


def test_memory_kept_bodies_follow_the_file_and_match_the_file_path(edge) -> None:
    """Small files go out of each worker's in-memory body cache: a file replaced under its key (new size and
    time, so a new ETag) is served new by every worker, whole and by range; an edge that keeps nothing in memory
    (every body through ``pathsend``) sends the same bytes."""
    server, url, media = edge
    asset_id, (playback_id,) = publish(server, media)
    name = "480p/seg_00002.m4s"
    stored = Path(server.settings.storage_url) / "assets" / asset_id / "media" / name
    old = stored.read_bytes()
    seen = _all_workers(f"{url}/{playback_id}/{name}", lambda a: a.content == old)  # every worker keeps it
    assert all(all(answers) for answers in seen.values()), seen
    new = old[::-1] + b"\0" * 1000
    replaced = stored.with_suffix(".tmp")
    replaced.write_bytes(new)
    replaced.replace(stored)
    seen = _all_workers(f"{url}/{playback_id}/{name}", lambda a: a.status_code == 200 and a.content == new)
    assert all(all(answers) for answers in seen.values()), seen
    ranged = _all_workers(f"{url}/{playback_id}/{name}", lambda a: a.status_code == 206 and a.content == new[10:5010],
                          headers={"Range": "bytes=10-5009"})
    assert all(all(answers) for answers in ranged.values()), ranged
    process, plain = server.start_granian_edge(workers=1, body_cache_mb=0)
    try:
        for file in ("480p/init.mp4", "480p/seg_00001.m4s", "audio/seg_00001.m4s", "highest.mp4"):
            assert _fresh("GET", f"{plain}/{playback_id}/{file}").content == (media / file).read_bytes()
            assert _fresh("GET", f"{url}/{playback_id}/{file}").content == (media / file).read_bytes()
    finally:
        process.stop()


def _assert_refused_everywhere(url: str, status: int, error_type: str, **kwargs) -> float:
    """Wait until a request on a fresh connection is refused, then require every worker to refuse it; the
    seconds it took from now to the end of that sweep."""
    started = time.monotonic()
    while _fresh("GET", url, **kwargs).status_code == 200:
        assert time.monotonic() - started < INVALIDATION_BOUND, "still served after the bound"
        time.sleep(0.05)
    deadline = started + INVALIDATION_BOUND
    while True:
        seen = _by_worker(url, lambda a: a.status_code == status, rounds=40, **kwargs)
        if len(seen) == WORKERS and all(all(answers) for answers in seen.values()):
            break
        assert time.monotonic() < deadline, f"some worker still serves it after {INVALIDATION_BOUND} s: {seen}"
        time.sleep(0.1)
    assert_error(_fresh("GET", url, **kwargs), status, error_type)
    return time.monotonic() - started


def _watch(url: str, stop: threading.Event, statuses: list[int], **kwargs) -> None:
    """A viewer fetching ``url`` over one keep-alive connection until ``stop`` (what is refused mid-stream)."""
    with requests.Session() as session:
        while not stop.is_set():
            statuses.append(session.get(url, timeout=10, **kwargs).status_code)


def _while_watched(url: str, change: Callable[[], None], **kwargs) -> tuple[float, list[int]]:
    stop, statuses = threading.Event(), []
    viewer = threading.Thread(target=_watch, args=(url, stop, statuses), kwargs=kwargs, daemon=True)
    viewer.start()
    try:
        time.sleep(0.3)
        change()
        took = _assert_refused_everywhere(url, 404 if "params" not in kwargs else 403,
                                          "not_found" if "params" not in kwargs else "playback_forbidden", **kwargs)
    finally:
        stop.set()
        viewer.join(timeout=15)
    return took, statuses


def test_deleted_asset_stops_on_every_worker_within_the_bound(edge) -> None:
    server, url, media = edge
    asset_id, (playback_id,) = publish(server, media)
    segment = f"{url}/{playback_id}/480p/seg_00001.m4s"
    assert all(all(a) for a in _all_workers(segment, lambda a: a.status_code == 200).values())  # every cache warm
    took, statuses = _while_watched(segment, lambda: server.client.delete(
        f"{url}/video/v1/assets/{asset_id}", timeout=10).raise_for_status())
    assert took <= INVALIDATION_BOUND
    assert statuses and statuses[0] == 200 and statuses[-1] == 404, statuses[-5:]  # the viewer was cut off


def test_removed_playback_id_stops_on_every_worker_within_the_bound(edge) -> None:
    server, url, media = edge
    asset_id, (doomed, kept) = publish(server, media, policies=(PlaybackPolicy.PUBLIC, PlaybackPolicy.PUBLIC))
    manifest = f"{url}/{doomed}.m3u8"
    assert all(all(a) for a in _all_workers(manifest, lambda a: a.status_code == 200).values())
    took, _ = _while_watched(manifest, lambda: server.client.delete(
        f"{url}/video/v1/assets/{asset_id}/playback-ids/{doomed}", timeout=10).raise_for_status())
    assert took <= INVALIDATION_BOUND
    assert _fresh("GET", f"{url}/{kept}.m3u8").status_code == 200  # the asset's other id still plays


def test_revoked_signing_key_stops_on_every_worker_within_the_bound(edge) -> None:
    server, url, media = edge
    _, (signed_id,) = publish(server, media, policies=(PlaybackPolicy.SIGNED,))
    created = server.client.post(f"{url}/system/v1/signing-keys", timeout=10).json()["data"]
    token = mint(created["id"], base64.b64decode(created["private_key"]), signed_id)
    segment = f"{url}/{signed_id}/480p/seg_00001.m4s"
    served = _all_workers(segment, lambda a: a.status_code == 200, params={"token": token})
    assert all(all(a) for a in served.values())
    took, _ = _while_watched(segment, lambda: server.client.delete(
        f"{url}/system/v1/signing-keys/{created['id']}", timeout=10).raise_for_status(), params={"token": token})
    assert took <= INVALIDATION_BOUND


def test_the_api_is_reached_through_the_edge_port(edge) -> None:
    server, url, _ = edge
    listed = server.client.get(f"{url}/video/v1/assets", params={"limit": 1}, timeout=10)
    assert listed.status_code == 200 and listed.headers["X-RateLimit-Limit"]
    assert listed.json()["data"] == server.client.get(f"{server.url}/video/v1/assets", params={"limit": 1},
                                                      timeout=10).json()["data"]
    refused = requests.get(f"{url}/video/v1/assets", timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
    assert requests.get(f"{url}/healthz", timeout=10).json()["status"] == "ok"
    created = server.client.post(f"{url}/video/v1/uploads", json={"new_asset_settings": {}}, timeout=10)
    assert created.status_code == 201 and created.json()["data"]["status"] == "waiting"
    health = requests.get(f"{url}/edge/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["role"] == "edge"


def test_the_edge_exports_metrics_per_worker(edge) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    _, url, _ = edge

    def handled() -> dict[str, float]:
        text = requests.get(f"http://127.0.0.1:{METRICS_PORT[0]}/metrics", timeout=10).text
        samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples
                   if family.name == "granian_requests_handled"]
        return {sample.labels["worker"]: sample.value for sample in samples}

    before = sum(handled().values())
    for _ in range(40):
        assert _fresh("GET", f"{url}/edge/healthz").status_code == 200

    def counted() -> dict[str, float]:
        now = handled()
        assert sum(now.values()) >= before + 40, now
        return now

    assert len(eventually(counted, 10)) == WORKERS  # one series per worker process


def test_healthz_names_its_worker_and_a_missing_worker_is_a_typed_error(api) -> None:
    """``/edge/healthz`` names the worker that answered (the same name as its ``X-Served-By``); waiting for more
    workers than the edge runs ends in a ``KinorayError`` naming how many answered, not a hang."""
    from kinoray.errors import KinorayError

    process, url = api.start_granian_edge(workers=1)
    try:
        worker = _fresh("GET", f"{url}/edge/healthz").json()["worker"]
        assert worker == _fresh("GET", f"{url}/NoSuchPlaybackId.m3u8").headers["X-Served-By"]
        started = time.monotonic()
        with pytest.raises(KinorayError, match="1 of the edge's 2 worker"):
            process.wait_ready(url, timeout=2, workers=2)
        assert time.monotonic() - started < 15
    finally:
        process.stop()


def test_serves_plain_503_is_told_as_a_typed_over_capacity(api) -> None:
    """Ray Serve refuses past its queue bound with a plain-text 503; through the edge the client gets kinoray's
    typed ``over_capacity`` (with Retry-After), like the API's own shedding."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Overloaded(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = b"Request dropped due to backpressure (num_queued_requests=64, max_queued_requests=64)."
            self.send_response(503)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    serve_proxy = ThreadingHTTPServer(("127.0.0.1", 0), Overloaded)
    threading.Thread(target=serve_proxy.serve_forever, daemon=True).start()
    process, url = api.start_granian_edge(workers=1, api_url=f"http://127.0.0.1:{serve_proxy.server_address[1]}")
    try:
        answer = requests.get(f"{url}/video/v1/assets", timeout=10)
        assert answer.status_code == 503 and answer.json()["error"]["type"] == "over_capacity", answer.text
        assert int(answer.headers["Retry-After"]) >= 1
    finally:
        process.stop()
        serve_proxy.shutdown()


def test_a_down_api_is_a_typed_502_and_streams_keep_playing(api, media_dir, tmp_path_factory) -> None:
    from tests.conftest import free_port

    _, media = packaged_asset(media_dir, tmp_path_factory.getbasetemp())
    _, (playback_id,) = publish(api, media)
    process, url = api.start_granian_edge(workers=1, api_url=f"http://127.0.0.1:{free_port()}")
    try:
        answer = requests.get(f"{url}/video/v1/assets", timeout=10)
        assert answer.status_code == 502 and answer.headers["Retry-After"] == "1"
        assert answer.json()["error"]["type"] == "api_unavailable"
        assert requests.get(f"{url}/{playback_id}.m3u8", timeout=10).status_code == 200
    finally:
        process.stop()


def test_host_based_routing(api, media_dir, tmp_path_factory) -> None:
    _, media = packaged_asset(media_dir, tmp_path_factory.getbasetemp())
    _, (playback_id,) = publish(api, media)
    process, url = api.start_granian_edge(workers=1, domain="video.example.test")

    def get(host: str, path: str) -> requests.Response:
        return requests.get(f"{url}{path}", headers={"Host": host}, timeout=30)

    try:
        stream, image, beacon = ("stream.video.example.test", "image.video.example.test",
                                 "beacon.video.example.test")
        assert get(stream, f"/{playback_id}.m3u8").status_code == 200
        assert get(stream, f"/{playback_id}/480p/seg_00001.m4s").status_code == 200
        for host, path in ((stream, "/video/v1/assets"), (stream, f"/{playback_id}/storyboard.vtt"),
                           (image, f"/{playback_id}.m3u8"), (image, "/video/v1/assets"),
                           (beacon, f"/{playback_id}.m3u8"), (stream, "/upload/v1/x")):
            answer = get(host, path)
            assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found", (host, path)
        reached = get(image, f"/{playback_id}/storyboard.vtt").json()["error"]  # the images route answered:
        assert "no images" in reached["messages"][0]  # this bare test asset has no video track to draw
        batch = {"events": [{"e": "play", "xid": "host-routing", "uti": 1}]}
        for path in ("/", "/data/v1/beacons"):  # the Mux Data collector, as an SDK's beaconCollectionDomain posts
            sent = requests.post(f"{url}{path}", headers={"Host": beacon}, json=batch, timeout=10)
            assert sent.status_code == 202 and sent.headers["Access-Control-Allow-Origin"] == "*"
        assert requests.get(f"{url}/data/v1/video-views", headers={"Host": beacon}, timeout=10).status_code == 404
        assert get(f"api.video.example.test:{url.rsplit(':', 1)[1]}", "/healthz").status_code == 200  # other hosts
    finally:
        process.stop()


def test_https(api, media_dir, tmp_path_factory) -> None:
    _, media = packaged_asset(media_dir, tmp_path_factory.getbasetemp())
    _, (playback_id,) = publish(api, media)
    certificate = self_signed(tmp_path_factory.mktemp("tls"))
    cert, key = certificate.cert, certificate.key
    process, url = api.start_granian_edge(workers=1, tls_cert=cert, tls_key=key)
    try:
        assert url.startswith("https://")
        answer = requests.get(f"{url}/{playback_id}/480p/init.mp4", verify=cert, timeout=10)
        assert answer.status_code == 200 and answer.content == (media / "480p" / "init.mp4").read_bytes()
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/{playback_id}.m3u8", timeout=10)  # not a certificate the system trusts
    finally:
        process.stop()
