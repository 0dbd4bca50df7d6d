"""Object storage on a local directory and on S3 (moto's threaded server through s3fs): commits, listings,
publishing order, stale keys, range reads, and which errors are retried."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinoray.errors import StorageError
from kinoray.settings import StorageSettings
from kinoray.store import ObjectStore, open_url, url_size
from kinoray.store.objects import _retrying


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return ObjectStore(str(tmp_path / "root"))
    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("s3_server")
    return ObjectStore(f"s3://{bucket}/prefix", StorageSettings(s3_endpoint_url=endpoint))


def test_put_get_list_delete(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "blob.bin"
    source.write_bytes(b"x" * 1000)
    store.put_file(source, "a/b/blob.bin")
    store.put_bytes(b"hello", "a/c.txt")
    store.put_bytes(b"hello again", "a/c.txt")  # a re-commit replaces, never duplicates
    assert store.list() == ["a/b/blob.bin", "a/c.txt"]
    assert store.get_bytes("a/c.txt") == b"hello again" and store.size("a/b/blob.bin") == 1000
    assert not list(store.iter_temporary())
    store.get_file("a/b/blob.bin", tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    with store.open("a/b/blob.bin") as reader:
        reader.seek(990)
        assert reader.read() == b"x" * 10
    store.delete_prefix("a/b")
    assert store.list() == ["a/c.txt"]
    store.delete_prefix("a/b")  # idempotent
    with pytest.raises(StorageError, match="FileNotFoundError"):
        store.get_bytes("missing")


def test_publish_tree_puts_manifests_last_and_drops_stale_keys(store: ObjectStore, tmp_path: Path) -> None:
    order: list[str] = []

    class Recording(ObjectStore):
        def put_file(self, local_path, key):  # noqa: ANN001
            order.append(key)
            super().put_file(local_path, key)

    recording = Recording(store.url, store.settings)
    store.put_bytes(b"old", "360p/seg_00009.m4s")
    tree = tmp_path / "tree"
    for name in ("master.m3u8", "manifest.mpd", "360p/index.m3u8", "360p/init.mp4", "360p/seg_00001.m4s"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(name.encode())
    recording.publish_tree(tree, last=("index.m3u8", "manifest.mpd", "master.m3u8"))
    assert order[-3:] == ["360p/index.m3u8", "manifest.mpd", "master.m3u8"]
    assert store.list() == ["360p/index.m3u8", "360p/init.mp4", "360p/seg_00001.m4s", "manifest.mpd", "master.m3u8"]


def test_open_url_reads_ranges_remotely(s3_bucket, s3_server, tmp_path: Path) -> None:
    store = ObjectStore(f"s3://{s3_bucket}", StorageSettings(s3_endpoint_url=s3_server))
    store.put_bytes(bytes(range(256)) * 64, "media/file.bin")
    url = f"s3://{s3_bucket}/media/file.bin"
    assert url_size(url) == 16384
    with open_url(url) as reader:
        reader.seek(1000)
        assert reader.read(4) == bytes([1000 % 256, 1001 % 256, 1002 % 256, 1003 % 256])
    with pytest.raises(StorageError):
        open_url(f"s3://{s3_bucket}/media/missing.bin").read()


def test_only_transient_errors_are_retried() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("connection reset by peer")
        return "ok"

    assert _retrying("flaky", flaky, retries=4) == "ok" and len(calls) == 3
    calls.clear()

    def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("no such key")

    with pytest.raises(StorageError, match="no such key"):
        _retrying("missing", missing, retries=4)
    assert len(calls) == 1
    calls.clear()

    def down() -> None:
        calls.append(1)
        raise ConnectionRefusedError("refused")

    with pytest.raises(StorageError, match="refused"):
        _retrying("down", down, retries=2)
    assert len(calls) == 3
