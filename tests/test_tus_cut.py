"""tus uploads never lose the bytes that arrived (issue 14), on SQLite and PostgreSQL.

**Cut and resume at 20 random offsets.** For each of 20 uploads (1–2 MiB of random bytes), a raw ``PATCH``
declares the whole file, sends its first ``cut`` bytes, and the client closes the socket. "Arrived" is made
exact before the close:

- on the production edge (Granian worker processes, ``ApiServer.start_granian_edge``): the client's kernel
  has no unacknowledged byte left (``SIOCOUTQ == 0``: the server's kernel holds all ``cut`` bytes), so the
  server reads them all before the end of the stream;
- on the in-process test edge (uvicorn, ``ApiServer.edge_url``): the app itself has taken the ``cut`` bytes
  (``kinoray_upload_bytes_total``). uvicorn drops body bytes it buffered but the app had not read yet when
  the connection closes, so on it only bytes the app has taken can be held to this.

Then ``HEAD`` is polled (bounded: :data:`COMMIT_BOUND`) until the offset moves, and must equal ``cut``
exactly: the server keeps what arrived, no more, no less. An empty ``PATCH`` at that offset must stop being
``423`` within :data:`LOCK_BOUND` seconds of the close (the lock goes with the connection), tuspy resumes from
``HEAD``'s offset, and all 20 stored inputs must be byte-identical (sha256) to their sources. Neither server may
log an error for any of it. The seed is printed (``-s`` shows it; a failure names it); set
``KINORAY_TUS_CUT_SEED`` to replay one.

**A server that cancels the request** (as Ray Serve's proxy did) instead of sending ``http.disconnect``: the
bytes taken before the cancel are kept, at once, and nothing is logged.

**An upload whose tus creation did not complete** (never sent, or its transaction failed) takes no ``PATCH``:
``409 upload_not_created``, nothing stored; the creation sent again makes it work.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import io
import logging
import os
import random
import socket
import struct
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from kinoray.store.models import Upload
from kinoray.telemetry import API_REGISTRY

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}
UPLOADS = 20
#: Seconds from the close within which ``HEAD`` must show the bytes that arrived (a loaded 2-core machine).
COMMIT_BOUND = 10.0
#: Seconds from the close within which the upload must stop answering ``423``.
LOCK_BOUND = 2.0
_ERROR_MARKS = ("ERROR", "CRITICAL", "Traceback", "aclose", "Exception in ASGI")


@pytest.fixture(scope="module")
def seed() -> int:
    value = int(os.environ.get("KINORAY_TUS_CUT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\ntest_tus_cut seed: {value} (KINORAY_TUS_CUT_SEED={value} replays it)")  # noqa: T201 - asked for
    return value


@pytest.fixture()
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """``caplog`` at WARNING that also hears uvicorn's own loggers (they do not propagate to the root logger):
    "Exception in ASGI application" would be logged there."""
    caplog.set_level(logging.WARNING)
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        uvicorn.removeHandler(caplog.handler)


@pytest.fixture(scope="module")
def granian(api: Any) -> Iterator[tuple[Any, str]]:
    """The production edge (one Granian worker process) on ``api``'s database and storage: (process, url)."""
    process, url = api.start_granian_edge(workers=1)
    try:
        yield process, url
    finally:
        process.stop()


def _new(api: Any, base: str) -> tuple[str, str]:
    """A new upload from the management API (its tus creation is the caller's); ``(id, upload URL on base)``."""
    answer = api.client.post(f"{api.url}/video/v1/uploads", json={}, timeout=10)
    assert answer.status_code == 201, answer.text
    upload_id = answer.json()["data"]["id"]
    return upload_id, f"{base}/upload/v1/{upload_id}"


def _offset(url: str) -> int:
    answer = requests.head(url, headers=TUS, timeout=10)
    assert answer.status_code == 200, answer.status_code
    return int(answer.headers["Upload-Offset"])


def _taken() -> float:
    """Body bytes the in-process edge's app has taken from its server."""
    return API_REGISTRY.get_sample_value("kinoray_upload_bytes_total") or 0.0


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes this socket sent that the peer's kernel has not acknowledged yet (Linux ``SIOCOUTQ``)."""
    return int(struct.unpack("I", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])


def _poll(condition: Any, what: str, within: float) -> float:
    """Seconds until ``condition()`` held, polled every 5 ms for at most ``within`` seconds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            raise AssertionError(f"{what}: still not after {time.monotonic() - start:.2f} s (bound {within:.2f} s)")
        time.sleep(0.005)
    return time.monotonic() - start


def _cut_patch(url: str, data: bytes, cut: int, *, in_process: bool) -> float:
    """A PATCH at offset 0 declaring all of ``data`` whose connection closes after ``cut`` bytes that are known
    to have arrived (see the module docstring); the monotonic time of the close."""
    host_port, path = url.split("//", 1)[1].split("/", 1)
    host, port = host_port.split(":")
    before = _taken()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (f"PATCH /{path} HTTP/1.1\r\nHost: {host_port}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(data)}\r\n\r\n")
        sock.sendall(head.encode() + data[:cut])
        if in_process:
            _poll(lambda: _taken() >= before + cut, "the edge app to take the bytes sent", COMMIT_BOUND)
        else:
            _poll(lambda: _unacknowledged(sock) == 0, "the server to acknowledge the bytes sent", COMMIT_BOUND)
    return time.monotonic()


def _not_locked(url: str, offset: int) -> bool:
    answer = requests.patch(url, data=b"", headers={**OCTETS, "Upload-Offset": str(offset)}, timeout=10)
    assert answer.status_code in (204, 423), (answer.status_code, answer.text)
    return answer.status_code == 204


def _stored_input(api: Any, upload_id: str) -> bytes:
    with api.platform.db.session() as session:
        upload = session.get(Upload, upload_id)
        assert upload is not None and upload.status.value == "asset_created", upload
        asset_id = upload.asset_id
    return bytes(api.platform.store.get_bytes(f"assets/{asset_id}/input"))


def _errors_in(records: list[logging.LogRecord]) -> list[str]:
    return [f"{record.name}: {record.getMessage()}" for record in records
            if record.levelno >= logging.ERROR or "aclose" in record.getMessage()]


# --- cut and resume ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["granian", "in_process"])
def test_cut_at_20_random_offsets_keeps_what_arrived_and_resumes_byte_identical(
        api: Any, seed: int, server: str, request: pytest.FixtureRequest, logged: pytest.LogCaptureFixture) -> None:
    from tusclient.uploader import Uploader

    process = None
    if server == "granian":
        process, base = request.getfixturevalue("granian")
        log_start = process.log_path.stat().st_size
    else:
        base = api.edge_url
    rng = random.Random(f"{seed}-{server}")
    where = f"seed {seed}, {server} edge, {api.platform.db.dialect}"
    identical, slowest_commit, slowest_unlock = 0, 0.0, 0.0
    for index in range(UPLOADS):
        data = rng.randbytes(rng.randrange(1 << 20, 2 << 20))
        cut = rng.randrange(1, len(data))
        upload_id, url = _new(api, base)
        created = requests.post(url, headers={**TUS, "Upload-Length": str(len(data))}, timeout=10)
        assert created.status_code == 201, created.text

        closed = _cut_patch(url, data, cut, in_process=server == "in_process")
        _poll(lambda url=url: _offset(url) != 0, f"upload {index} ({where}): the offset to move off 0 after the cut",
              closed + COMMIT_BOUND - time.monotonic())
        slowest_commit = max(slowest_commit, time.monotonic() - closed)
        offset = _offset(url)
        assert offset == cut, f"upload {index} ({where}): {cut} bytes arrived, the offset is {offset}"
        _poll(lambda url=url, cut=cut: _not_locked(url, cut), f"upload {index} ({where}): the lock to go",
              closed + LOCK_BOUND - time.monotonic())
        slowest_unlock = max(slowest_unlock, time.monotonic() - closed)

        resumed = Uploader(url=url, file_stream=io.BytesIO(data), chunk_size=1 << 20)
        assert resumed.offset == cut
        resumed.upload()
        if hashlib.sha256(_stored_input(api, upload_id)).digest() == hashlib.sha256(data).digest():
            identical += 1
    print(f"{where}: {identical}/{UPLOADS} identical; slowest commit {slowest_commit:.3f} s, "  # noqa: T201
          f"lock gone within {slowest_unlock:.3f} s of the close")
    assert identical == UPLOADS, f"{where}: only {identical}/{UPLOADS} stored inputs match their source"
    assert _errors_in(logged.records) == [], where
    if process is not None:
        with open(process.log_path, "rb") as log_file:
            log_file.seek(log_start)
            logged = log_file.read().decode(errors="replace")
        assert not [line for line in logged.splitlines() if any(mark in line for mark in _ERROR_MARKS)], logged


# --- a server that cancels the request -------------------------------------------------------------------


def test_a_cancelled_request_keeps_what_arrived_and_releases_the_lock_at_once(
        api: Any, logged: pytest.LogCaptureFixture) -> None:
    """The request's task is cancelled mid-body (Ray Serve's proxy did this on a client's drop): the bytes the
    app took are committed, the lock is gone, nothing is logged (it was ``aclose(): asynchronous generator is
    already running``, and the lock held for the 60 s idle timeout)."""
    from kinoray.edge.app import build_edge_api

    upload_id, url = _new(api, api.edge_url)
    data = random.Random(14).randbytes(300_000)
    assert requests.post(url, headers={**TUS, "Upload-Length": str(len(data))}, timeout=10).status_code == 201
    sent = 200_000
    chunks = [data[start:start + 50_000] for start in range(0, sent, 50_000)]

    async def cut_by_cancel() -> None:
        app = build_edge_api()  # a fresh app: its upload slots belong to this event loop
        stall = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if chunks:
                return {"type": "http.request", "body": chunks.pop(0), "more_body": True}
            await stall.wait()  # the client is gone; this server never says so
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            pass

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PATCH",
                 "scheme": "http", "path": f"/upload/v1/{upload_id}", "raw_path": f"/upload/v1/{upload_id}".encode(),
                 "query_string": b"", "root_path": "", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 9),
                 "headers": [(b"tus-resumable", b"1.0.0"), (b"upload-offset", b"0"),
                             (b"content-type", b"application/offset+octet-stream"),
                             (b"content-length", str(len(data)).encode())]}
        before = _taken()
        task = asyncio.create_task(app(scope, receive, send))
        while _taken() < before + sent:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the worker thread commits after the task is gone; keep this loop running for its calls back into it
        deadline = time.monotonic() + COMMIT_BOUND
        while await asyncio.to_thread(_offset, url) == 0:
            assert time.monotonic() < deadline, "the cancelled PATCH was not committed"
            await asyncio.sleep(0.005)

    asyncio.run(cut_by_cancel())
    assert _offset(url) == sent
    _poll(lambda: _not_locked(url, sent), "the lock to go after the cancel", LOCK_BOUND)
    assert requests.patch(url, data=data[sent:], headers={**OCTETS, "Upload-Offset": str(sent)},
                          timeout=10).status_code == 204
    assert _stored_input(api, upload_id) == data
    assert _errors_in(logged.records) == []


# --- an upload whose tus creation did not complete ---------------------------------------------------------


@contextmanager
def _creation_commit_fails(engine: sa.Engine, statement_start: str = "UPDATE UPLOADS") -> Iterator[None]:
    """A transaction that ran a statement starting with ``statement_start`` fails at COMMIT with "database is
    locked" (and is rolled back), as a tus creation did under load on SQLite."""
    def saw(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(statement_start):
            connection.info["kinoray_test_fail_commit"] = True

    def commit(connection: Any) -> None:
        if connection.info.pop("kinoray_test_fail_commit", False):
            raise sa.exc.OperationalError("COMMIT", None, Exception("database is locked"))

    def rollback(connection: Any) -> None:
        connection.info.pop("kinoray_test_fail_commit", None)

    listeners = [("after_cursor_execute", saw), ("commit", commit), ("rollback", rollback)]
    for name, listener in listeners:
        sa.event.listen(engine, name, listener)
    try:
        yield
    finally:
        for name, listener in listeners:
            sa.event.remove(engine, name, listener)


def _row(api: Any, upload_id: str) -> Upload:
    with api.platform.db.session() as session:
        upload = session.get(Upload, upload_id)
        assert upload is not None
        return upload


def _nothing_stored(api: Any, upload_id: str) -> bool:
    store = api.platform.store
    return not [*store.list(f"uploads/{upload_id}"), *store.iter_temporary(f"uploads/{upload_id}")]


def test_a_patch_before_tus_creation_is_refused_and_stores_nothing(api: Any) -> None:
    upload_id, url = _new(api, api.edge_url)
    for extra in ({}, {"Upload-Length": "5"}):
        answer = requests.patch(url, data=b"abcde", headers={**OCTETS, "Upload-Offset": "0", **extra}, timeout=10)
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"]["type"] == "upload_not_created"
        assert answer.headers["Tus-Resumable"] == "1.0.0"
    assert _offset(url) == 0 and _nothing_stored(api, upload_id)
    row = _row(api, upload_id)
    assert row.upload_length is None and row.storage_key is None and row.status.value == "waiting"

    assert requests.post(url, headers={**TUS, "Upload-Length": "5"}, timeout=10).status_code == 201
    done = requests.patch(url, data=b"abcde", headers={**OCTETS, "Upload-Offset": "0"}, timeout=10)
    assert done.status_code == 204 and done.headers["Upload-Offset"] == "5"
    assert _stored_input(api, upload_id) == b"abcde"

    deferred_id, deferred = _new(api, api.edge_url)  # Upload-Defer-Length is a completed creation
    assert requests.post(deferred, headers={**TUS, "Upload-Defer-Length": "1"}, timeout=10).status_code == 201
    assert requests.patch(deferred, data=b"ab", headers={**OCTETS, "Upload-Offset": "0"}, timeout=10).status_code == 204
    last = requests.patch(deferred, data=b"c", headers={**OCTETS, "Upload-Offset": "2", "Upload-Length": "3"},
                          timeout=10)
    assert last.status_code == 204 and _stored_input(api, deferred_id) == b"abc"


def test_a_creation_whose_transaction_failed_takes_no_patch_until_created_again(api: Any) -> None:
    """The audit's lost uploads: the creation failed (database is locked), a PATCH still got 204 on the
    length-less upload, which then waited forever. Now the failed creation leaves nothing behind and the PATCH
    is refused; sending the creation again recovers."""
    upload_id, url = _new(api, api.edge_url)
    metadata = {"Upload-Metadata": "filename Y2xpcC5tcDQ="}
    with _creation_commit_fails(api.platform.db.engine):
        failed = requests.post(url, headers={**TUS, "Upload-Length": "6", **metadata}, timeout=30)
    assert failed.status_code >= 500, failed.text
    row = _row(api, upload_id)
    assert (row.upload_length, row.storage_key, row.upload_metadata, row.upload_offset) == (None, None, {}, 0)

    refused = requests.patch(url, data=b"abcdef", headers={**OCTETS, "Upload-Offset": "0"}, timeout=10)
    assert refused.status_code == 409 and refused.json()["error"]["type"] == "upload_not_created"
    assert _offset(url) == 0 and _nothing_stored(api, upload_id)

    again = requests.post(url, headers={**TUS, "Upload-Length": "6", **metadata}, timeout=10)
    assert again.status_code == 201, again.text
    head = requests.head(url, headers=TUS, timeout=10)
    assert head.headers["Upload-Length"] == "6" and head.headers["Upload-Metadata"] == "filename Y2xpcC5tcDQ="
    assert requests.patch(url, data=b"abcdef", headers={**OCTETS, "Upload-Offset": "0"},
                          timeout=10).status_code == 204
    assert _stored_input(api, upload_id) == b"abcdef"


def test_an_empty_upload_is_created_and_completed_in_one_transaction(api: Any) -> None:
    """``Upload-Length: 0`` completes the upload in its creation: if the transaction that makes the asset fails,
    the length was not recorded either (it used to be, by a transaction of its own: an upload of length 0 that
    never made its asset)."""
    upload_id, url = _new(api, api.edge_url)
    with _creation_commit_fails(api.platform.db.engine, "INSERT INTO ASSETS"):
        assert requests.post(url, headers={**TUS, "Upload-Length": "0"}, timeout=30).status_code >= 500
    row = _row(api, upload_id)
    assert (row.status.value, row.upload_length, row.storage_key, row.asset_id) == ("waiting", None, None, None)
    assert requests.post(url, headers={**TUS, "Upload-Length": "0"}, timeout=10).status_code == 201
    assert _stored_input(api, upload_id) == b""
