"""No cheap way down: what an unauthenticated or hostile caller can cost the management API is bounded, and what
it is refused with is typed.

- bodies: a declared huge body is refused before a byte is read; a chunked one is cut at the limit (the server's
  memory does not grow with what is offered); a trickled one times out (408);
- a wrong-secret flood on a known token id: the flood is throttled (429 before any scrypt) while the token's
  legitimate caller keeps being served; a flood of unknown ids from one address does not touch other clients;
- overload: past ``api.max_in_flight`` requests are shed at once with a typed 503 and Retry-After, nothing else
  fails, health stays answered, and the API serves normally right after; one client past its share
  (``api.max_in_flight_per_client``) gets 429s while another is served in full;
- the database locked past its timeout: a typed 503 with Retry-After, reads still served (SQLite WAL).

Each test runs its own API (``tests.api_server.ApiServer``) with the defaults of the limit it checks; the
flooding client sends from 127.0.0.2 so that it is a different client address from the legitimate one.
"""

from __future__ import annotations

import base64
import http.client
import socket
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.api_server import ApiServer

FLOODER = "127.0.0.2"  # Linux routes all of 127.0.0.0/8 to loopback: a second client address on one machine


@pytest.fixture()
def server(api_backend, tmp_path, request):
    settings = dict(getattr(request, "param", {}))
    edge = settings.pop("edge", {})
    # The floods here share one token between their "clients": the token's own rate limit (tests/test_ratelimit.py)
    # is set out of reach, so what each test sees is the guard it is about (in-flight shares, overload, auth
    # failures), not a bucket that a fast enough server empties first.
    api = ApiServer(api_backend.new_url(), tmp_path / "data", edge=edge,
                    api={"auth_failure_burst": 10, "auth_failures_per_second": 1.0,
                         "rate_limit_per_second": 1e6, "rate_limit_burst": 1_000_000, **settings})
    try:
        yield api
    finally:
        api.close()


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _read_answer(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    """The status and body of the HTTP answer waiting on ``sock``."""
    sock.settimeout(timeout)
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response.read()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize("via", ["api", "edge"])
def test_a_declared_huge_body_is_refused_before_it_is_read(server, via) -> None:
    url = server.url if via == "api" else server.edge_url
    with socket.create_connection(("127.0.0.1", _port(url))) as sock:
        sock.sendall(b"POST /video/v1/assets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 600000000\r\n\r\n")
        started = time.monotonic()
        status, body = _read_answer(sock)
    assert status == 413 and b'"request_too_large"' in body
    assert time.monotonic() - started < 5, "the refusal waited for the body"


@pytest.mark.parametrize("via", ["api", "edge"])
def test_a_chunked_body_is_cut_at_the_limit_and_memory_stays_flat(server, via) -> None:
    limit = server.settings.api.max_body_bytes
    block = b"x" * 65536
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    before = _rss()
    sent = 0
    with socket.create_connection(("127.0.0.1", _port(server.url if via == "api" else server.edge_url))) as sock:
        sock.sendall(b"POST /video/v1/assets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        sock.settimeout(10)
        try:
            while sent < 300 * 1024**2:  # offers 300 MB
                sock.sendall(chunk)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        try:
            status, body = _read_answer(sock)
            assert status == 413 and b'"request_too_large"' in body
        except (ConnectionResetError, http.client.RemoteDisconnected):
            pass  # the server closed while we were still sending: the refusal may be lost with the connection
    assert sent < 64 * 1024**2, f"the server kept reading: {sent} bytes accepted against a {limit}-byte limit"
    assert _rss() - before < 64 * 1024**2
    assert requests.get(f"{server.url}/video/v1/assets", auth=server.auth, timeout=10).status_code == 200


@pytest.mark.parametrize("via", ["api", "edge"])
def test_an_oversized_header_block_is_refused_and_the_server_goes_on(server, via) -> None:
    """Header limits are the HTTP server's own (uvicorn here, Granian at the edge, HAProxy in front of Serve):
    a 1 MiB header block is refused or cut, never buffered into the app."""
    url = server.url if via == "api" else server.edge_url
    with socket.create_connection(("127.0.0.1", _port(url))) as sock:
        sock.settimeout(10)
        request = b"GET /video/v1/assets HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 1024**2 + b"\r\n\r\n"
        try:
            sock.sendall(request)
            status, _ = _read_answer(sock)
            assert 400 <= status < 500, status
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            pass  # closed on us: refused as well
    assert requests.get(f"{url}/video/v1/assets", auth=server.auth, timeout=10).status_code == 200


@pytest.mark.parametrize("server", [{"body_timeout_seconds": 1.0}], indirect=True)
def test_a_trickled_body_times_out(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /video/v1/assets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"input\":")
        started = time.monotonic()
        status, body = _read_answer(sock)
    assert status == 408 and b'"request_timeout"' in body
    assert 0.5 < time.monotonic() - started < 8


def _basic(token_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{token_id}:{secret}".encode()).decode()


def _flood(port: int, stop: threading.Event, statuses: Counter, make_auth) -> None:
    n = 0
    while not stop.is_set():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(FLOODER, 0))
        try:
            for _ in range(50):
                if stop.is_set():
                    break
                n += 1
                connection.request("GET", "/video/v1/assets", headers={"Authorization": make_auth(n)})
                answer = connection.getresponse()
                answer.read()
                statuses[answer.status] += 1
                if answer.status == 429:
                    assert answer.getheader("Retry-After")
        finally:
            connection.close()


def test_a_wrong_secret_flood_is_throttled_and_the_legitimate_caller_served(server) -> None:
    client = requests.Session()
    client.auth = server.auth
    assert client.get(f"{server.url}/video/v1/assets", timeout=10).status_code == 200  # its secret is known now
    stop, statuses = threading.Event(), Counter()
    flooders = [threading.Thread(target=_flood, args=(server.port, stop, statuses,
                                                      lambda n: _basic(server.token_id, f"wrong-{n}")))
                for _ in range(4)]
    started = time.monotonic()
    for thread in flooders:
        thread.start()
    served = 0
    try:
        for _ in range(200):
            answer = client.get(f"{server.url}/video/v1/assets", timeout=10)
            served += answer.status_code == 200
    finally:
        stop.set()
        for thread in flooders:
            thread.join(30)
    elapsed = time.monotonic() - started
    assert served >= 190, f"legitimate traffic {served}/200 served during the flood"
    # every 401 cost an scrypt; past the burst, the flood only met 429s (no scrypt)
    assert statuses[429] > statuses[401], statuses
    assert statuses[401] <= 10 + elapsed * 1.0 * 2 + 2, f"{statuses[401]} secrets checked in {elapsed:.1f} s"
    assert set(statuses) <= {401, 429}, statuses


def test_an_unknown_token_flood_from_one_address_leaves_other_clients_alone(server) -> None:
    stop, statuses = threading.Event(), Counter()
    flooder = threading.Thread(target=_flood, args=(server.port, stop, statuses,
                                                    lambda n: _basic(f"Unknown{n:08d}", "secret")))
    flooder.start()
    try:
        deadline = time.monotonic() + 20
        while statuses[429] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert statuses[429] >= 20, statuses
        # another client's wrong credentials are still answered 401 (not throttled), its right ones 200
        assert requests.get(f"{server.url}/video/v1/assets", auth=("Zz9" * 10, "x"), timeout=10).status_code == 401
        assert requests.get(f"{server.url}/video/v1/assets", auth=server.auth, timeout=10).status_code == 200
    finally:
        stop.set()
        flooder.join(30)


@pytest.mark.parametrize("server", [{"max_in_flight_per_client": 2}], indirect=True)
def test_one_client_cannot_take_the_others_share(server) -> None:
    stop, statuses = threading.Event(), Counter()
    refusals: list[tuple[str, str | None]] = []

    def flood() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30, source_address=(FLOODER, 0))
        auth = _basic(server.token_id, server.secret)
        while not stop.is_set():
            connection.request("GET", "/video/v1/assets", headers={"Authorization": auth})
            answer = connection.getresponse()
            body = answer.read()
            statuses[answer.status] += 1
            if answer.status != 200 and len(refusals) < 5:
                refusals.append((body.decode(), answer.getheader("Retry-After")))
        connection.close()

    flooders = [threading.Thread(target=flood) for _ in range(12)]
    for thread in flooders:
        thread.start()
    try:
        served = sum(server.client.get(f"{server.url}/video/v1/assets", timeout=30).status_code == 200
                     for _ in range(100))
    finally:
        stop.set()
        for thread in flooders:
            thread.join(60)
    assert served == 100, f"the other client: {served}/100 served"
    assert statuses[429] > 0 and set(statuses) <= {200, 429}, statuses
    for body, retry_after in refusals:
        assert '"too_many_requests"' in body and retry_after == "1", body


@pytest.mark.parametrize(("server", "via"), [({"max_in_flight": 2}, "api"),
                                             ({"edge": {"max_forwarded_in_flight": 2}}, "edge")],
                         indirect=["server"])
def test_overload_is_shed_with_a_typed_503_and_recovers(server, via) -> None:
    """Shed by the API's guard, or first by the edge's forwarder (where a refusal costs least)."""
    base = server.url if via == "api" else server.edge_url
    stop, statuses, shed_bodies = threading.Event(), Counter(), []
    health: Counter = Counter()

    def hammer() -> None:
        session = requests.Session()
        session.auth = server.auth
        while not stop.is_set():
            answer = session.get(f"{base}/video/v1/assets", timeout=30)
            statuses[answer.status_code] += 1
            if answer.status_code == 503 and len(shed_bodies) < 5:
                shed_bodies.append((answer.json(), answer.headers.get("Retry-After")))

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            health[requests.get(f"{base}/healthz", timeout=10).status_code] += 1
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0 and statuses[200] > 0, statuses
    for body, retry_after in shed_bodies:
        assert body["error"]["type"] == "over_capacity" and int(retry_after) >= 1
    assert set(health) == {200}, health
    recovered = time.monotonic()
    while requests.get(f"{base}/video/v1/assets", auth=server.auth, timeout=10).status_code != 200:
        assert time.monotonic() - recovered < 5, "the API did not recover within 5 s"
        time.sleep(0.05)


def test_a_locked_sqlite_database_answers_a_typed_503_and_reads_go_on(api_backend, tmp_path) -> None:
    if api_backend.kind != "sqlite":
        pytest.skip("SQLite's write lock; PostgreSQL's outage is the next test")
    url = api_backend.new_url()
    api = ApiServer(url, tmp_path / "data", database_timeout_seconds=0.5)
    try:
        assert api.client.post(f"{api.url}/video/v1/assets", json={"inputs": [{"url": "https://example.com/a.mp4"}]},
                               timeout=10).status_code in (201, 400)
        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=5)
        holder.execute("BEGIN IMMEDIATE")
        try:
            answer = api.client.post(f"{api.url}/system/v1/signing-keys", timeout=10)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["type"] == "database_unavailable"
            assert int(answer.headers["Retry-After"]) >= 1
            assert api.client.get(f"{api.url}/video/v1/assets", timeout=10).status_code == 200  # WAL: reads go on
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert api.client.post(f"{api.url}/system/v1/signing-keys", timeout=10).status_code == 201
    finally:
        api.close()


def test_a_postgresql_outage_answers_a_typed_503_and_the_api_comes_back(private_postgres, tmp_path) -> None:
    """A private PostgreSQL server (never the shared one) stopped under a running API, then started again."""
    api = ApiServer(private_postgres.url, tmp_path / "data", database_timeout_seconds=2)
    try:
        assert api.client.get(f"{api.url}/video/v1/assets", timeout=10).status_code == 200
        private_postgres.stop("immediate")
        for method, path in (("GET", "/video/v1/assets"), ("POST", "/system/v1/signing-keys")):
            answer = api.client.request(method, f"{api.url}{path}", timeout=30)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["type"] == "database_unavailable"
            assert int(answer.headers["Retry-After"]) >= 1
        through_edge = requests.get(f"{api.edge_url}/{'A' * 32}.m3u8", timeout=30)  # the edge resolves it there
        assert through_edge.status_code == 503 and through_edge.json()["error"]["type"] == "database_unavailable"
        ready = requests.get(f"{api.url}/readyz", timeout=30)
        assert ready.status_code == 503 and not ready.json()["checks"]["database"]["ok"]
        private_postgres.start()
        deadline = time.monotonic() + 30
        while api.client.get(f"{api.url}/video/v1/assets", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the API did not come back within 30 s of the database"
            time.sleep(0.2)
        assert api.client.post(f"{api.url}/system/v1/signing-keys", timeout=10).status_code == 201
    finally:
        api.close()
