"""Direct uploads under a small ``api.max_upload_bytes`` and on S3 storage (moto's S3 server): the size limit on
every path that can fix or grow a length, and parts written, joined, renamed and deleted through s3fs.

Storage behaviour does not depend on the database, so this module runs on SQLite only."""

from __future__ import annotations

import base64
import hashlib
import io
import random
import uuid
from typing import Any

import pytest
import requests

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}
MAX = 64 * 1024


@pytest.fixture(scope="module")
def api(s3_server: str, tmp_path_factory: pytest.TempPathFactory):
    import s3fs

    from tests.api_server import ApiServer, Backend

    bucket = f"kinoray-uploads-{uuid.uuid4().hex[:10]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    fs.mkdir(bucket)
    backend = Backend("sqlite", tmp_path_factory.mktemp("db-uploads-s3"))
    server = ApiServer(backend.new_url(), tmp_path_factory.mktemp("api-uploads-s3"),
                       api={"max_upload_bytes": MAX},
                       storage={"url": f"s3://{bucket}/kinoray", "s3_endpoint_url": s3_server})
    try:
        yield server
    finally:
        server.close()
        backend.close()
        fs.rm(bucket, recursive=True)


def _new(api: Any) -> dict[str, Any]:
    answer = api.client.post(f"{api.url}/video/v1/uploads", json={})
    assert answer.status_code == 201, answer.text
    return dict(answer.json()["data"])


def _data(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def test_the_maximum_size_holds_on_every_path(api: Any) -> None:
    upload = _new(api)
    url = upload["url"]
    options = requests.options(url, timeout=10)
    assert options.headers["Tus-Max-Size"] == str(MAX)
    assert requests.post(url, headers={**TUS, "Upload-Length": str(MAX + 1)}, timeout=10).status_code == 413

    assert requests.post(url, headers={**TUS, "Upload-Defer-Length": "1"}, timeout=10).status_code == 201
    past = requests.patch(url, data=b"x" * (MAX + 1), timeout=10, headers={**OCTETS, "Upload-Offset": "0"})
    assert past.status_code == 413
    chunked = requests.patch(url, data=iter([b"x" * MAX, b"x"]), timeout=10,
                             headers={**OCTETS, "Upload-Offset": "0"})
    assert chunked.status_code == 413
    assert requests.head(url, headers=TUS, timeout=10).headers["Upload-Offset"] == "0"

    put = requests.put(_new(api)["url"], data=b"y" * 10, timeout=10,
                       headers={"Content-Range": f"bytes 0-9/{MAX + 1}"})
    assert put.status_code == 413
    whole = requests.put(_new(api)["url"], data=b"z" * (MAX + 1), timeout=10)
    assert whole.status_code == 413
    assert api.platform.store.list("uploads") == []


def test_parts_are_written_joined_and_deleted_on_s3(api: Any) -> None:
    from tusclient.client import TusClient

    store = api.platform.store
    assert store.url.startswith("s3://")
    data = _data(MAX - 5)
    upload = _new(api)
    uploader = TusClient(upload["url"]).uploader(file_stream=io.BytesIO(data), chunk_size=10 * 1024,
                                                 upload_checksum=True)
    uploader.upload(stop_at=30 * 1024)
    assert len(store.list(f"uploads/{upload['id']}/parts")) == 3
    uploader.upload()
    done = api.client.get(f"{api.url}/video/v1/uploads/{upload['id']}").json()["data"]
    assert done["status"] == "asset_created", done
    stored = store.get_bytes(f"assets/{done['asset_id']}/input")
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    assert store.list(f"uploads/{upload['id']}") == []

    single = _new(api)  # one PATCH: its part is renamed (a server-side copy on S3), not streamed again
    digest = base64.b64encode(hashlib.sha1(data).digest()).decode()
    answer = requests.post(single["url"], data=data, timeout=10, headers={
        **OCTETS, "Upload-Length": str(len(data)), "Upload-Checksum": f"sha1 {digest}"})
    assert answer.status_code == 201 and answer.headers["Upload-Offset"] == str(len(data))
    asset_id = api.client.get(f"{api.url}/video/v1/uploads/{single['id']}").json()["data"]["asset_id"]
    assert store.get_bytes(f"assets/{asset_id}/input") == data
    assert store.list(f"uploads/{single['id']}") == [] and list(store.iter_temporary("")) == []
