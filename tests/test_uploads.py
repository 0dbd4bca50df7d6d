"""Direct uploads over real HTTP (SQLite and PostgreSQL): the official tus client (tuspy) against a connection
cut mid-PATCH, one test per MUST of tus 1.0.0 and its creation/termination/checksum extensions, the per-upload
lock, UpChunk-style PUT with Content-Range, cancel, expiry, CORS, and the management resource's errors.

The upload URL takes no credentials, so tus requests here go through plain ``requests`` (no auth)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import random
import socket
import time
from datetime import timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from kinoray.control.uploads import expire_uploads
from kinoray.store.models import Asset, Event, Job, Upload, new_id, utcnow
from kinoray.telemetry import API_REGISTRY
from tests.media import MediaSpec, make_media

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}
CHUNK = 16 * 1024


@pytest.fixture(scope="module")
def clip(media_dir: Path) -> bytes:
    return make_media(MediaSpec(name="upload_clip", duration_s=Fraction(2)), media_dir).read_bytes()


def _payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def _new(api: Any, **body: Any) -> dict[str, Any]:
    answer = api.client.post(f"{api.url}/video/v1/uploads", json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json()["data"])


def _create(url: str, length: int | None, **headers: str) -> requests.Response:
    sized = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    return requests.post(url, headers={**TUS, **sized, **headers}, timeout=10)


def _patch(url: str, offset: int, data: Any, **headers: str) -> requests.Response:
    return requests.patch(url, data=data, headers={**OCTETS, "Upload-Offset": str(offset), **headers}, timeout=10)


def _head(url: str) -> requests.Response:
    return requests.head(url, headers=TUS, timeout=10)


def _offset(url: str) -> int:
    answer = _head(url)
    assert answer.status_code == 200, answer.status_code
    return int(answer.headers["Upload-Offset"])


def _stored(api: Any, upload_id: str) -> dict[str, bytes]:
    """Every object under the upload's prefix, temporary ones included, with its bytes."""
    store = api.platform.store
    keys = [*store.list(f"uploads/{upload_id}"), *store.iter_temporary(f"uploads/{upload_id}")]
    return {key: store.get_bytes(key) for key in keys}


def _row(api: Any, upload_id: str) -> Upload:
    with api.platform.db.session() as session:
        upload = session.get(Upload, upload_id)
        assert upload is not None
        return upload


def _events(api: Any, object_id: str) -> list[str]:
    with api.platform.db.session() as session:
        query = sa.select(Event.type).where(Event.object_id == object_id).order_by(Event.created_at)
        return list(session.scalars(query))


def _bytes_received() -> float:
    return API_REGISTRY.get_sample_value("kinoray_upload_bytes_total") or 0.0


def _wait(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _open_patch(url: str, offset: int, declared: int, first: bytes) -> socket.socket:
    """A raw PATCH declaring ``declared`` bytes of which only ``first`` is sent; returns once the server has
    received them (so the upload's lock is held)."""
    host_port, path = url.split("//", 1)[1].split("/", 1)
    host, port = host_port.split(":")
    before = _bytes_received()
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (f"PATCH /{path} HTTP/1.1\r\nHost: {host_port}\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {declared}\r\n\r\n")
    sock.sendall(head.encode() + first)
    _wait(lambda: _bytes_received() >= before + len(first), "the server to receive the first bytes")
    return sock


def _status_line(sock: socket.socket) -> str:
    answer = b""
    while b"\r\n" not in answer:
        data = sock.recv(4096)
        if not data:
            break
        answer += data
    return answer.split(b"\r\n", 1)[0].decode()


# --- the official client, and a connection cut mid-PATCH ------------------------------------------------------


def test_tuspy_upload_cut_mid_patch_and_resumed_is_byte_identical(api: Any, clip: bytes) -> None:
    import io

    from tusclient.client import TusClient
    from tusclient.uploader import Uploader

    upload = _new(api, new_asset_settings={"playback_policies": ["public"], "passthrough": "tus-test"})
    assert upload["status"] == "waiting" and upload["url"] == f"{api.edge_url}/upload/v1/{upload['id']}"

    # tuspy creates (POST on the upload URL) and sends the first two chunks
    first = TusClient(upload["url"]).uploader(file_stream=io.BytesIO(clip), chunk_size=CHUNK,
                                                metadata={"filename": "clip.mp4"})
    first.upload(stop_at=2 * CHUNK)
    assert first.url == upload["url"] and _offset(upload["url"]) == 2 * CHUNK

    # a PATCH declaring two chunks sends one and the connection drops: exactly that chunk is kept
    sock = _open_patch(upload["url"], 2 * CHUNK, 2 * CHUNK, clip[2 * CHUNK:3 * CHUNK])
    sock.close()
    _wait(lambda: _offset(upload["url"]) != 2 * CHUNK, "the cut PATCH to be committed")
    head = _head(upload["url"])
    assert int(head.headers["Upload-Offset"]) == 3 * CHUNK
    assert head.headers["Upload-Length"] == str(len(clip))
    parts = _stored(api, upload["id"])
    assert b"".join(parts[key] for key in sorted(parts)) == clip[:3 * CHUNK]

    # a fresh tuspy uploader resumes from the server's offset (with Upload-Checksum on every chunk)
    resumed = Uploader(url=upload["url"], file_stream=io.BytesIO(clip), chunk_size=CHUNK, upload_checksum=True)
    assert resumed.offset == 3 * CHUNK
    resumed.upload()

    done = api.client.get(f"{api.url}/video/v1/uploads/{upload['id']}").json()["data"]
    assert done["status"] == "asset_created", done
    asset_id = done["asset_id"]
    stored = api.platform.store.get_bytes(f"assets/{asset_id}/input")
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(clip).hexdigest()
    assert _stored(api, upload["id"]) == {}, "parts are deleted once joined"
    assert _events(api, upload["id"]) == ["video.upload.created", "video.upload.asset_created"]

    with api.platform.db.session() as session:
        asset = session.get(Asset, asset_id)
        assert asset is not None and asset.passthrough == "tus-test"
        job = session.scalars(sa.select(Job).where(Job.asset_id == asset_id)).one()
        assert job.source == f"assets/{asset_id}/input" and job.state == "queued"
        created = session.scalars(sa.select(Event).where(Event.type == "video.asset.created",
                                                         Event.object_id == asset_id)).one()
        assert created.payload["upload_id"] == upload["id"]
    answer = api.client.get(f"{api.url}/video/v1/assets/{asset_id}")
    assert answer.status_code == 200, answer.text
    view = answer.json()["data"]
    assert view["upload_id"] == upload["id"] and [p["policy"] for p in view["playback_ids"]] == ["public"]
    # HEAD still answers for a complete upload: the whole length is the offset
    assert _offset(upload["url"]) == len(clip)


# --- one test per MUST -----------------------------------------------------------------------------------


def test_requests_without_tus_resumable_are_412_and_not_processed(api: Any) -> None:
    upload = _new(api)
    url = upload["url"]
    bare = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    for answer in (
        requests.patch(url, data=b"abc", headers=bare, timeout=10),
        requests.patch(url, data=b"abc", headers={**bare, "Tus-Resumable": "0.2.2"}, timeout=10),
        requests.post(url, headers={"Upload-Length": "3"}, timeout=10),
        requests.head(url, timeout=10),
        requests.delete(url, timeout=10),
    ):
        assert answer.status_code == 412, answer.request.method
        assert answer.headers["Tus-Version"] == "1.0.0" and answer.headers["Tus-Resumable"] == "1.0.0"
    head = _head(url)
    assert head.headers["Upload-Offset"] == "0" and head.headers["Upload-Defer-Length"] == "1"
    assert _stored(api, upload["id"]) == {}
    assert _row(api, upload["id"]).status.value == "waiting"


def test_head_reports_offset_length_and_metadata_and_is_not_cached(api: Any) -> None:
    upload = _new(api)
    fresh = _head(upload["url"])
    assert fresh.status_code == 200
    assert fresh.headers["Upload-Offset"] == "0" and fresh.headers["Upload-Defer-Length"] == "1"
    assert fresh.headers["Cache-Control"] == "no-store" and fresh.headers["Tus-Resumable"] == "1.0.0"

    name = base64.b64encode("clip ü.mp4".encode()).decode()
    created = _create(upload["url"], 10, **{"Upload-Metadata": f"filename {name},private"})
    assert created.status_code == 201 and created.headers["Location"] == upload["url"]
    assert created.headers["Upload-Expires"].endswith(" GMT")
    assert _patch(upload["url"], 0, b"0123").status_code == 204
    head = _head(upload["url"])
    assert head.headers["Upload-Offset"] == "4" and head.headers["Upload-Length"] == "10"
    assert head.headers["Cache-Control"] == "no-store"
    assert head.headers["Upload-Metadata"] == f"filename {name},private"
    assert "Upload-Defer-Length" not in head.headers and head.headers["Upload-Expires"].endswith(" GMT")
    assert _row(api, upload["id"]).upload_metadata == {"filename": "clip ü.mp4", "private": ""}


def test_patch_without_offset_octet_stream_is_415(api: Any) -> None:
    upload = _new(api)
    for content_type in ("application/octet-stream", "text/plain", None):
        headers = {**TUS, "Upload-Offset": "0"}
        if content_type:
            headers["Content-Type"] = content_type
        answer = requests.patch(upload["url"], data=b"abc", headers=headers, timeout=10)
        assert answer.status_code == 415 and answer.json()["error"]["type"] == "unsupported_content_type"
        assert answer.headers["Tus-Resumable"] == "1.0.0"
    assert _offset(upload["url"]) == 0 and _stored(api, upload["id"]) == {}


def test_offset_mismatch_is_409_and_leaves_storage_byte_identical(api: Any) -> None:
    upload = _new(api)
    assert _create(upload["url"], 100).status_code == 201
    assert _patch(upload["url"], 0, b"a" * 10).status_code == 204
    before = _stored(api, upload["id"])
    for offset in (0, 5, 11, 99):
        answer = _patch(upload["url"], offset, b"b" * 10)
        assert answer.status_code == 409 and answer.json()["error"]["type"] == "offset_mismatch"
        assert answer.headers["Tus-Resumable"] == "1.0.0" and "Upload-Offset" not in answer.headers
    assert _stored(api, upload["id"]) == before
    assert _offset(upload["url"]) == 10
    missing = requests.patch(upload["url"], data=b"x", headers=OCTETS, timeout=10)
    assert missing.status_code == 400


def test_checksum_mismatch_is_460_and_keeps_the_offset(api: Any) -> None:
    upload = _new(api)
    url = upload["url"]
    assert _create(url, 30).status_code == 201
    good = base64.b64encode(hashlib.sha1(b"x" * 10).digest()).decode()
    answer = _patch(url, 0, b"x" * 10, **{"Upload-Checksum": f"sha1 {good}"})
    assert answer.status_code == 204 and answer.headers["Upload-Offset"] == "10"
    before = _stored(api, upload["id"])

    wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    answer = _patch(url, 10, b"y" * 10, **{"Upload-Checksum": f"sha256 {wrong}"})
    assert answer.status_code == 460 and answer.json()["error"]["type"] == "checksum_mismatch"
    assert answer.headers["Tus-Resumable"] == "1.0.0"
    assert _offset(url) == 10 and _stored(api, upload["id"]) == before

    md5 = base64.b64encode(hashlib.md5(b"y" * 10).digest()).decode()
    assert _patch(url, 10, b"y" * 10, **{"Upload-Checksum": f"md5 {md5}"}).status_code == 204
    assert [(p["offset"], p.get("algorithm")) for p in _row(api, upload["id"]).part_checksums or []] == [
        (0, "sha1"), (10, "md5")]


def test_unsupported_or_malformed_checksum_is_400(api: Any) -> None:
    upload = _new(api)
    assert _create(upload["url"], 30).status_code == 201
    digest = base64.b64encode(b"\0" * 4).decode()
    for header in (f"crc32 {digest}", "sha1 not-base64!", f"sha1 {digest}", "sha1"):
        answer = _patch(upload["url"], 0, b"z" * 10, **{"Upload-Checksum": header})
        assert answer.status_code == 400, header
        assert answer.json()["error"]["type"] == "invalid_parameters"
    assert _offset(upload["url"]) == 0 and _stored(api, upload["id"]) == {}


def test_too_large_is_413_on_creation_and_past_the_length(api: Any) -> None:
    upload = _new(api)
    url = upload["url"]
    limit = api.settings.api.max_upload_bytes
    answer = _create(url, limit + 1)
    assert answer.status_code == 413 and answer.json()["error"]["type"] == "upload_too_large"
    assert _head(url).headers["Upload-Defer-Length"] == "1"

    assert _create(url, 10).status_code == 201
    assert _patch(url, 0, b"a" * 11).status_code == 413
    assert _patch(url, 0, b"a" * 6).status_code == 204
    assert _patch(url, 6, b"b" * 5).status_code == 413
    before = _stored(api, upload["id"])
    # chunked: no Content-Length, so the excess is found while streaming; nothing of that body is kept
    chunked = _patch(url, 6, iter([b"c" * 3, b"c" * 3]))
    assert chunked.status_code == 413
    assert _offset(url) == 6 and _stored(api, upload["id"]) == before

    deferred = _new(api)
    assert _create(deferred["url"], None).status_code == 201
    past_max = _patch(deferred["url"], 0, b"d", **{"Upload-Length": str(limit + 1)})
    assert past_max.status_code == 413 and _offset(deferred["url"]) == 0


def test_termination_deletes_and_later_requests_are_410(api: Any) -> None:
    upload = _new(api)
    url = upload["url"]
    assert _create(url, 20).status_code == 201
    assert _patch(url, 0, b"q" * 8).status_code == 204
    assert _stored(api, upload["id"])
    answer = requests.delete(url, headers=TUS, timeout=10)
    assert answer.status_code == 204 and answer.headers["Tus-Resumable"] == "1.0.0"
    assert _stored(api, upload["id"]) == {}
    head = _head(url)
    assert head.status_code == 410 and "Upload-Offset" not in head.headers
    assert _patch(url, 8, b"q").status_code == 410
    assert requests.delete(url, headers=TUS, timeout=10).status_code == 410
    view = api.client.get(f"{api.url}/video/v1/uploads/{upload['id']}").json()["data"]
    assert view["status"] == "cancelled"
    assert _events(api, upload["id"])[-1] == "video.upload.cancelled"


def test_options_lists_version_extensions_and_checksum_algorithms(api: Any) -> None:
    upload = _new(api)
    answer = requests.options(upload["url"], timeout=10)
    assert answer.status_code == 204
    assert answer.headers["Tus-Version"] == "1.0.0" and answer.headers["Tus-Resumable"] == "1.0.0"
    extensions = set(answer.headers["Tus-Extension"].split(","))
    assert {"creation", "creation-defer-length", "termination", "checksum"} <= extensions
    assert "sha1" in answer.headers["Tus-Checksum-Algorithm"].split(",")
    assert int(answer.headers["Tus-Max-Size"]) == api.settings.api.max_upload_bytes
    assert "Access-Control-Allow-Origin" not in answer.headers  # no cors_origin on this upload


def test_cors_for_the_uploads_origin_only(api: Any) -> None:
    origin = "https://app.example.com"
    upload = _new(api, cors_origin=origin)
    url = upload["url"]
    preflight = requests.options(url, timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "tus-resumable,upload-offset,content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Upload-Offset" in preflight.headers["Access-Control-Allow-Headers"]
    assert int(preflight.headers["Access-Control-Max-Age"]) > 0

    head = requests.head(url, headers={**TUS, "Origin": origin}, timeout=10)
    assert head.headers["Access-Control-Allow-Origin"] == origin
    assert "Upload-Offset" in head.headers["Access-Control-Expose-Headers"]
    refused = _patch(url, 7, b"x", Origin=origin)  # errors carry CORS and tus headers too
    assert refused.status_code == 409 and refused.headers["Access-Control-Allow-Origin"] == origin
    assert refused.headers["Tus-Resumable"] == "1.0.0"
    other = requests.head(url, headers={**TUS, "Origin": "https://evil.example"}, timeout=10)
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers

    anywhere = _new(api, cors_origin="*")
    head = requests.head(anywhere["url"], headers={**TUS, "Origin": "https://any.example"}, timeout=10)
    assert head.headers["Access-Control-Allow-Origin"] == "https://any.example"


# --- locking ---------------------------------------------------------------------------------------------


def test_concurrent_patch_is_423(api: Any) -> None:
    upload = _new(api)
    url = upload["url"]
    assert _create(url, 20).status_code == 201
    sock = _open_patch(url, 0, 20, b"1" * 10)
    try:
        second = _patch(url, 0, b"2" * 20)
        assert second.status_code == 423 and second.json()["error"]["type"] == "upload_locked"
        assert second.headers["Tus-Resumable"] == "1.0.0"
        assert requests.delete(url, headers=TUS, timeout=10).status_code == 423
        sock.sendall(b"1" * 10)
        assert _status_line(sock).startswith("HTTP/1.1 204")
    finally:
        sock.close()
    assert _offset(url) == 20
    assert api.platform.store.get_bytes(f"assets/{_row(api, upload['id']).asset_id}/input") == b"1" * 20


def test_a_stalled_body_keeps_its_prefix_and_releases_the_lock(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from kinoray.serve.routes import uploads as routes

    monkeypatch.setattr(routes, "BODY_IDLE_TIMEOUT", 0.5)
    upload = _new(api)
    url = upload["url"]
    assert _create(url, 20).status_code == 201
    sock = _open_patch(url, 0, 20, b"s" * 10)  # and then silence, with the connection open
    try:
        assert _status_line(sock).startswith("HTTP/1.1 204")
    finally:
        sock.close()
    assert _offset(url) == 10
    assert _patch(url, 10, b"t" * 10).status_code == 204
    assert api.platform.store.get_bytes(f"assets/{_row(api, upload['id']).asset_id}/input") == b"s" * 10 + b"t" * 10


def test_a_row_lock_held_by_another_replica_is_423_and_the_sweeper_skips_it(api: Any) -> None:
    if api.platform.db.dialect != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite replicas rely on the compare-and-set")
    upload = _new(api)
    with api.platform.db.session() as session:  # past its deadline: due for the sweeper
        session.execute(sa.update(Upload).where(Upload.id == upload["id"])
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    with api.platform.db.session() as session:
        session.execute(sa.select(Upload).where(Upload.id == upload["id"]).with_for_update())
        answer = requests.put(f"{api.url}/video/v1/uploads/{upload['id']}/cancel", auth=api.auth, timeout=10)
        assert answer.status_code == 423 and answer.json()["error"]["type"] == "upload_locked"
        assert expire_uploads(api.platform) == 0
    assert expire_uploads(api.platform) == 1
    assert _row(api, upload["id"]).status.value == "timed_out"


def test_a_writer_that_lost_a_race_on_sqlite_answers_409_and_keeps_nothing(api: Any) -> None:
    if api.platform.db.dialect != "sqlite":
        pytest.skip("PostgreSQL's row lock makes this race impossible")
    upload = _new(api)
    url = upload["url"]
    assert _create(url, 20).status_code == 201
    sock = _open_patch(url, 0, 20, b"1" * 10)
    try:
        with api.platform.db.session() as session:  # another process's writer got there first
            session.execute(sa.update(Upload).where(Upload.id == upload["id"]).values(upload_offset=5))
        sock.sendall(b"1" * 10)
        assert _status_line(sock).startswith("HTTP/1.1 409")
    finally:
        sock.close()
    assert _offset(url) == 5 and _stored(api, upload["id"]) == {}


# --- UpChunk-style PUT -------------------------------------------------------------------------------------


def test_upchunk_put_with_content_range(api: Any) -> None:
    upload = _new(api, new_asset_settings={"max_resolution_tier": "720p"})
    url = upload["url"]
    data = _payload(3 * CHUNK + 100)
    total = len(data)

    def put(start: int, end: int) -> requests.Response:
        return requests.put(url, data=data[start:end + 1], timeout=10,
                            headers={"Content-Range": f"bytes {start}-{end}/{total}"})

    first = put(0, CHUNK - 1)
    assert first.status_code == 308 and first.headers["Range"] == f"bytes=0-{CHUNK - 1}"
    again = put(0, CHUNK - 1)  # a retry of a stored chunk is acknowledged, not stored twice
    assert again.status_code == 308 and again.headers["Range"] == f"bytes=0-{CHUNK - 1}"
    skipped = put(2 * CHUNK, 3 * CHUNK - 1)
    assert skipped.status_code == 409 and skipped.json()["error"]["type"] == "offset_mismatch"
    assert put(CHUNK, 2 * CHUNK - 1).status_code == 308
    status = requests.put(url, headers={"Content-Range": f"bytes */{total}"}, timeout=10)
    assert status.status_code == 308 and status.headers["Range"] == f"bytes=0-{2 * CHUNK - 1}"
    assert requests.put(url, data=b"x" * 3, headers={"Content-Range": "bytes 5-1/9"}, timeout=10).status_code == 400
    assert put(2 * CHUNK, 3 * CHUNK - 1).status_code == 308

    last = put(3 * CHUNK, total - 1)
    assert last.status_code == 200, last.text
    view = last.json()["data"]
    assert view["status"] == "asset_created" and view["id"] == upload["id"]
    assert put(3 * CHUNK, total - 1).status_code == 200  # the last chunk retried after its answer was lost
    assert api.platform.store.get_bytes(f"assets/{view['asset_id']}/input") == data
    with api.platform.db.session() as session:
        asset = session.get(Asset, view["asset_id"])
        assert asset is not None and asset.create_settings["max_resolution_tier"] == "720p"


def test_put_of_the_whole_file(api: Any) -> None:
    upload = _new(api)
    data = _payload(CHUNK + 3, seed=3)
    answer = requests.put(upload["url"], data=data, timeout=10)
    assert answer.status_code == 200 and answer.json()["data"]["status"] == "asset_created"
    assert api.platform.store.get_bytes(f"assets/{answer.json()['data']['asset_id']}/input") == data


def test_parts_that_cannot_be_joined_make_the_upload_errored(api: Any) -> None:
    upload = _new(api)
    url = upload["url"]
    assert _create(url, 8).status_code == 201
    assert _patch(url, 0, b"abcd").status_code == 204
    for key in api.platform.store.list(f"uploads/{upload['id']}"):
        api.platform.store.delete(key)  # storage lost a part
    answer = _patch(url, 4, b"efgh")
    assert answer.status_code == 502 and answer.json()["error"]["type"] == "storage_error"
    view = api.client.get(f"{api.url}/video/v1/uploads/{upload['id']}").json()["data"]
    assert view["status"] == "errored" and view["error"]["type"] == "storage_error" and "asset_id" not in view
    assert _events(api, upload["id"])[-1] == "video.upload.errored"
    assert _stored(api, upload["id"]) == {} and _head(url).status_code == 410


def test_a_body_of_several_mebibytes_streams_with_its_checksum(api: Any) -> None:
    data = _payload(3 * 1024 * 1024 + 17, seed=11)
    upload = _new(api)
    assert _create(upload["url"], len(data) + 1).status_code == 201
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    answer = _patch(upload["url"], 0, data, **{"Upload-Checksum": f"sha256 {digest}"})
    assert answer.status_code == 204 and answer.headers["Upload-Offset"] == str(len(data))
    assert _patch(upload["url"], len(data), b"!").status_code == 204
    asset_id = _row(api, upload["id"]).asset_id
    assert api.platform.store.get_bytes(f"assets/{asset_id}/input") == data + b"!"


# --- creation rules ----------------------------------------------------------------------------------------


def test_creation_rules_deferred_length_and_creation_with_upload(api: Any) -> None:
    upload = _new(api)
    url = upload["url"]
    assert requests.post(url, headers=TUS, timeout=10).status_code == 400
    both = {**TUS, "Upload-Length": "5", "Upload-Defer-Length": "1"}
    assert requests.post(url, headers=both, timeout=10).status_code == 400
    assert requests.post(url, headers={**TUS, "Upload-Defer-Length": "2"}, timeout=10).status_code == 400
    assert requests.post(url, headers={**TUS, "Upload-Length": "-1"}, timeout=10).status_code == 400
    assert _create(url, 5).status_code == 201
    assert _create(url, 12).status_code == 201  # again: nothing received yet
    assert _head(url).headers["Upload-Length"] == "12"
    assert _patch(url, 0, b"abcd").status_code == 204
    late = _create(url, 12)
    assert late.status_code == 409 and late.headers["Tus-Resumable"] == "1.0.0"

    deferred = _new(api)
    assert _create(deferred["url"], None).status_code == 201
    assert _patch(deferred["url"], 0, b"abc").status_code == 204
    assert _patch(deferred["url"], 3, b"de", **{"Upload-Length": "9"}).status_code == 204
    assert _head(deferred["url"]).headers["Upload-Length"] == "9"
    assert _patch(deferred["url"], 5, b"f", **{"Upload-Length": "10"}).status_code == 400
    overridden = requests.post(deferred["url"], data=b"ghij", timeout=10, headers={
        **OCTETS, "Upload-Offset": "5", "X-HTTP-Method-Override": "PATCH"})
    assert overridden.status_code == 204 and overridden.headers["Upload-Offset"] == "9"
    assert _row(api, deferred["id"]).status.value == "asset_created"

    empty = _new(api)
    assert _create(empty["url"], 0).status_code == 201
    assert _row(api, empty["id"]).status.value == "asset_created"
    assert api.platform.store.get_bytes(f"assets/{_row(api, empty['id']).asset_id}/input") == b""

    with_body = _new(api)
    answer = requests.post(with_body["url"], data=b"12345", timeout=10,
                           headers={**OCTETS, "Upload-Length": "8"})
    assert answer.status_code == 201 and answer.headers["Upload-Offset"] == "5"
    assert answer.headers["Location"] == with_body["url"]


# --- the management resource -------------------------------------------------------------------------------


def test_cancel(api: Any) -> None:
    upload = _new(api, cors_origin="https://app.example.com", timeout=120, test=True)
    assert upload["timeout"] == 120 and upload["test"] is True
    assert upload["cors_origin"] == "https://app.example.com"
    assert _create(upload["url"], 10).status_code == 201
    assert _patch(upload["url"], 0, b"abc").status_code == 204
    cancel = f"{api.url}/video/v1/uploads/{upload['id']}/cancel"
    answer = api.client.put(cancel)
    assert answer.status_code == 200 and answer.json()["data"]["status"] == "cancelled"
    assert _stored(api, upload["id"]) == {}
    assert _head(upload["url"]).status_code == 410
    assert api.client.put(cancel).json()["data"]["status"] == "cancelled"  # again: no change
    assert _events(api, upload["id"]).count("video.upload.cancelled") == 1

    complete = _new(api)
    assert requests.put(complete["url"], data=b"xyz", timeout=10).status_code == 200
    refused = api.client.put(f"{api.url}/video/v1/uploads/{complete['id']}/cancel")
    assert refused.status_code == 409 and refused.json()["error"]["type"] == "conflict"
    assert api.client.put(f"{api.url}/video/v1/uploads/{new_id()}/cancel").status_code == 404


def test_expired_uploads_are_swept(api: Any) -> None:
    upload = _new(api, timeout=60)
    assert _create(upload["url"], 10).status_code == 201
    assert _patch(upload["url"], 0, b"abc").status_code == 204
    with api.platform.db.session() as session:
        session.execute(sa.update(Upload).where(Upload.id == upload["id"])
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert _patch(upload["url"], 3, b"d").status_code == 410  # past its deadline before the sweep, too
    assert _head(upload["url"]).status_code == 410
    assert expire_uploads(api.platform) == 1
    assert _stored(api, upload["id"]) == {}
    view = api.client.get(f"{api.url}/video/v1/uploads/{upload['id']}").json()["data"]
    assert view["status"] == "timed_out"
    assert expire_uploads(api.platform) == 0


def test_create_honours_idempotency_key(api: Any) -> None:
    key = {"Idempotency-Key": f"upload-{new_id()}"}
    body = {"new_asset_settings": {"passthrough": "once"}}
    first = api.client.post(f"{api.url}/video/v1/uploads", json=body, headers=key)
    again = api.client.post(f"{api.url}/video/v1/uploads", json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert _events(api, first.json()["data"]["id"]) == ["video.upload.created"]


def test_invalid_create_parameters_are_typed_400(api: Any) -> None:
    for body in ({"new_asset_settings": {"video_quality": "ultra"}},
                 {"new_asset_settings": {"inputs": [{"url": "https://example.com/a.mp4"}]}},
                 {"new_asset_settings": {"meta": {"color": "red"}}},
                 {"timeout": 59}, {"timeout": 604801}, {"cors_origin": "https://example.com/path"},
                 {"unknown": 1}):
        answer = api.client.post(f"{api.url}/video/v1/uploads", json=body)
        assert answer.status_code == 400, body
        assert answer.json()["error"]["type"] == "invalid_parameters" and answer.json()["error"]["messages"]


def test_unknown_and_path_traversal_ids_are_404(api: Any) -> None:
    host, port = api.url.split("//", 1)[1].split(":")
    paths = [f"/upload/v1/{new_id()}", "/upload/v1/..%2F..", "/upload/v1/..%2F..%2Fkinoray.db",
             "/upload/v1/%2e%2e", "/upload/v1/a/b", "/upload/v1/" + "a" * 300, "/upload/v1/a%00b"]
    for path in paths:
        for method in ("HEAD", "PATCH", "POST", "DELETE", "OPTIONS", "PUT"):
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            connection.request(method, path, body=b"x" if method in ("PATCH", "PUT") else None,
                               headers={**OCTETS, "Upload-Offset": "0", "Upload-Length": "1"})
            answer = connection.getresponse()
            answer.read()
            connection.close()
            assert answer.status == 404, (method, path, answer.status)
            assert answer.getheader("Upload-Offset") is None
        for bad in (path.replace("/upload/v1/", "/video/v1/uploads/"),):
            assert api.client.get(f"{api.url}{bad}").status_code == 404


def test_management_needs_credentials(api: Any) -> None:
    upload = _new(api)
    for method, path in (("post", ""), ("get", ""), ("get", f"/{upload['id']}"),
                         ("put", f"/{upload['id']}/cancel")):
        answer = requests.request(method, f"{api.url}/video/v1/uploads{path}", json={}, timeout=10)
        assert answer.status_code == 401 and answer.json()["error"]["type"] == "unauthorized", (method, path)
    assert _row(api, upload["id"]).status.value == "waiting"


def test_list_pages_and_cursors(api: Any) -> None:
    made = [_new(api)["id"] for _ in range(3)]
    first = api.client.get(f"{api.url}/video/v1/uploads", params={"limit": 2}).json()
    assert [item["id"] for item in first["data"]] == made[::-1][:2] and first["next_cursor"]
    second = api.client.get(f"{api.url}/video/v1/uploads",
                            params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert second["data"][0]["id"] == made[0]
    page = api.client.get(f"{api.url}/video/v1/uploads", params={"limit": 2, "page": 2}).json()
    assert page["data"][0]["id"] == made[0]
    for params in ({"limit": 0}, {"limit": 101}, {"cursor": "garbage"}, {"cursor": "a/b"}, {"page": 0},
                   {"page": 10**20}):
        assert api.client.get(f"{api.url}/video/v1/uploads", params=params).status_code == 400, params
