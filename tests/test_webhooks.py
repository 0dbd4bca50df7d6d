"""Webhooks: the ``Mux-Signature`` scheme, the endpoint API, and the outbox sender against a real HTTP receiver.

The receiver is a ``ThreadingHTTPServer`` on 127.0.0.1, so the API here runs with ``allow_private_inputs``; the
default SSRF policy for endpoint URLs is tested in ``test_signing_keys.py``, which runs the default-settings API.
Retries are driven with ``deliver_due(now=...)``: a day of backoff takes a second.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from prometheus_client import REGISTRY

import kinoray
from kinoray.control import webhooks
from kinoray.control.events import emit, envelope
from kinoray.control.platform import Platform
from kinoray.control.views import View
from kinoray.control.webhooks import RETRY_SCHEDULE, backoff, deliver_due, endpoint_body, sign, verify
from kinoray.errors import AuthenticationError
from kinoray.store.models import Event, WebhookDelivery, WebhookEndpoint, utcnow
from tests.api_server import ApiServer

TIMEOUT = 0.5  # the API's webhook_timeout_seconds here: /slow answers after 4 times that

# --- signatures ----------------------------------------------------------------------------------------------

# Computed outside Python: printf '1700000000.{"type":"video.asset.ready","id":"evt1"}' |
#   openssl dgst -sha256 -hmac 'whsec_test_secret'
VECTOR_SECRET = "whsec_test_secret"
VECTOR_BODY = b'{"type":"video.asset.ready","id":"evt1"}'
VECTOR_TIME = 1_700_000_000
VECTOR_HEADER = "t=1700000000,v1=5a2bd70159aabf8c64ddf12ec1087f731a31e7310e5c4157e9e4a09316b68ab0"


def test_sign_matches_a_fixed_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_BODY, VECTOR_TIME) == VECTOR_HEADER


def test_verify_accepts_the_vector_within_tolerance() -> None:
    for offset in (0, -299, 299):
        verify(VECTOR_SECRET, VECTOR_BODY, VECTOR_HEADER, now=VECTOR_TIME + offset)


@pytest.mark.parametrize(("secret", "body", "match"), [
    (VECTOR_SECRET, VECTOR_BODY.replace(b"evt1", b"evt2"), "does not match"),
    (VECTOR_SECRET, VECTOR_BODY + b" ", "does not match"),
    ("whsec_other", VECTOR_BODY, "does not match"),
])
def test_verify_refuses_a_tampered_body_or_wrong_secret(secret: str, body: bytes, match: str) -> None:
    with pytest.raises(AuthenticationError, match=match):
        verify(secret, body, VECTOR_HEADER, now=VECTOR_TIME)


@pytest.mark.parametrize(("offset", "match"), [(301, "old"), (-301, "future")])
def test_verify_refuses_timestamps_beyond_tolerance(offset: int, match: str) -> None:
    with pytest.raises(AuthenticationError, match=match):
        verify(VECTOR_SECRET, VECTOR_BODY, VECTOR_HEADER, now=VECTOR_TIME + offset)
    verify(VECTOR_SECRET, VECTOR_BODY, VECTOR_HEADER, now=VECTOR_TIME + offset, tolerance=abs(offset))


def test_verify_accepts_any_of_several_signatures() -> None:
    good = VECTOR_HEADER.split(",v1=")[1]
    header = f"t={VECTOR_TIME},v1={'0' * 64},v1={good},v1=deadbeef"
    verify(VECTOR_SECRET, VECTOR_BODY, header, now=VECTOR_TIME)
    with pytest.raises(AuthenticationError):
        verify(VECTOR_SECRET, VECTOR_BODY, f"t={VECTOR_TIME},v1={'0' * 64},v1=deadbeef", now=VECTOR_TIME)


@pytest.mark.parametrize("header", [
    None, "", "v1=abc", f"t={VECTOR_TIME}", f"t=soon,v1={'0' * 64}", "garbage",
    f"t={VECTOR_TIME},t={VECTOR_TIME},v1={'0' * 64}",
])
def test_verify_refuses_malformed_headers(header: str | None) -> None:
    with pytest.raises(AuthenticationError):
        verify(VECTOR_SECRET, VECTOR_BODY, header, now=VECTOR_TIME)


def test_backoff_is_jittered_within_twenty_percent() -> None:
    for attempts, base in ((1, RETRY_SCHEDULE[0]), (3, RETRY_SCHEDULE[2]), (99, RETRY_SCHEDULE[-1])):
        samples = [backoff(attempts) for _ in range(200)]
        assert all(base * 0.8 <= sample <= base * 1.2 for sample in samples)
        assert len(set(samples)) > 100


# --- a receiver ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog (5) drops connections when eight senders connect at once


@dataclass
class Receiver:
    """Records every POST. ``/ok`` answers 200, ``/status/<n>`` answers n, ``/redirect`` 302 to ``/ok``,
    ``/slow`` 200 after ``4 * TIMEOUT`` seconds, ``/garbage`` something that is not HTTP."""

    server: http.server.ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def received(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [item for item in self.requests if path is None or item.path == path]


def _start_receiver() -> Receiver:
    receiver: Receiver

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
            status, headers, answer = 200, {}, b""
            if self.path.startswith("/status/"):
                status = int(self.path.rsplit("/", 1)[1])
                headers, answer = {"Content-Type": "text/plain"}, f"answered {status}".encode()
            elif self.path == "/redirect":
                status, headers = 302, {"Location": receiver.url("/ok")}
            elif self.path == "/slow":
                time.sleep(4 * TIMEOUT)
            elif self.path == "/garbage":
                self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
                return
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the sender gave up waiting

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    receiver = Receiver(server)
    threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
    return receiver


@pytest.fixture(scope="module")
def receiver():
    receiver = _start_receiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture(scope="module")
def server(api_backend, tmp_path_factory: pytest.TempPathFactory):
    server = ApiServer(api_backend.new_url(), tmp_path_factory.mktemp("webhooks"),
                       api={"allow_private_inputs": True, "webhook_timeout_seconds": TIMEOUT})
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest, receiver: Receiver):
    yield
    with receiver.lock:
        receiver.requests.clear()
    if "server" in request.fixturenames:
        with request.getfixturevalue("server").platform.db.session() as session:
            session.execute(sa.delete(WebhookDelivery))
            session.execute(sa.delete(WebhookEndpoint))


def _endpoints(server: ApiServer) -> str:
    return f"{server.url}/system/v1/webhook-endpoints"


def _create(server: ApiServer, url: str) -> dict[str, Any]:
    answer = server.client.post(_endpoints(server), json={"url": url}, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]


class _Noted(View):
    """A resource's view as events carry it (non-ASCII text in it: the body is UTF-8 JSON)."""

    id: str
    status: str
    note: str


def _emit(server: ApiServer, event_type: str = "video.asset.ready", object_id: str = "asset1") -> Event:
    with server.platform.db.session() as session:
        return emit(session, event_type, "asset", object_id, _Noted(id=object_id, status="ready", note="é"))


def _delivery(server: ApiServer, event_id: str) -> WebhookDelivery:
    with server.platform.db.session() as session:
        return session.scalars(sa.select(WebhookDelivery).where(WebhookDelivery.event_id == event_id)).one()


def _metric(outcome: str) -> float:
    return REGISTRY.get_sample_value("kinoray_webhook_deliveries_total", {"outcome": outcome}) or 0.0


# --- the endpoint API ----------------------------------------------------------------------------------------


def test_endpoint_crud(server: ApiServer, receiver: Receiver) -> None:
    created = _create(server, receiver.url("/ok"))
    assert created["url"] == receiver.url("/ok") and created["enabled"] is True
    assert len(created["secret"]) >= 32 and created["disabled_reason"] is None
    base = f"{_endpoints(server)}/{created['id']}"
    assert server.client.get(base, timeout=10).json()["data"] == created

    second = _create(server, receiver.url("/status/500"))
    page = server.client.get(_endpoints(server), params={"limit": 1}, timeout=10).json()
    assert [item["id"] for item in page["data"]] == [second["id"]]
    page = server.client.get(_endpoints(server), params={"limit": 1, "cursor": page["next_cursor"]},
                             timeout=10).json()
    assert [item["id"] for item in page["data"]] == [created["id"]] and page["next_cursor"] is None

    disabled = server.client.patch(base, json={"enabled": False}, timeout=10).json()["data"]
    assert disabled["enabled"] is False and disabled["disabled_reason"]
    enabled = server.client.patch(base, json={"enabled": True, "url": receiver.url("/status/204")},
                                  timeout=10).json()["data"]
    assert enabled["enabled"] is True and enabled["disabled_reason"] is None
    assert enabled["url"] == receiver.url("/status/204")

    rotated = server.client.post(f"{base}/rotate-secret", timeout=10).json()["data"]
    assert rotated["secret"] != created["secret"]
    assert server.client.get(base, timeout=10).json()["data"]["secret"] == rotated["secret"]

    event = _emit(server)
    assert server.client.delete(base, timeout=10).status_code == 204
    with server.platform.db.session() as session:  # its queued deliveries went with it
        assert session.scalars(sa.select(WebhookDelivery.endpoint_id)
                               .where(WebhookDelivery.event_id == event.id)).all() == [second["id"]]
    for answer in (server.client.get(base, timeout=10), server.client.delete(base, timeout=10),
                   server.client.get(f"{base}/deliveries", timeout=10)):
        assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize(("method", "body"), [
    ("post", {}), ("post", {"url": ""}), ("post", {"url": "http://x", "secret": "mine"}),
    ("patch", {"enabled": "sometimes"}),
])
def test_endpoint_bad_requests(server: ApiServer, receiver: Receiver, method: str, body: dict[str, Any]) -> None:
    target = _endpoints(server)
    if method == "patch":
        target += "/" + _create(server, receiver.url("/ok"))["id"]
    answer = server.client.request(method, target, json=body, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_parameters"
    answer = server.client.get(_endpoints(server), params={"cursor": "nonsense"}, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_parameters"


def test_every_route_needs_credentials(server: ApiServer) -> None:
    base = _endpoints(server)
    for method, url in [("post", base), ("get", base), ("get", f"{base}/x"), ("patch", f"{base}/x"),
                        ("delete", f"{base}/x"), ("post", f"{base}/x/rotate-secret"), ("get", f"{base}/x/deliveries")]:
        answer = requests.request(method, url, json={"url": "http://example.com"}, timeout=10)
        assert answer.status_code == 401, (method, url)
        assert answer.json()["error"]["type"] == "unauthorized"


# --- delivering ----------------------------------------------------------------------------------------------


def test_delivery_is_signed_and_carries_the_envelope(server: ApiServer, receiver: Receiver) -> None:
    endpoint = _create(server, receiver.url("/ok"))
    disabled = _create(server, receiver.url("/status/500"))
    server.client.patch(f"{_endpoints(server)}/{disabled['id']}", json={"enabled": False}, timeout=10)
    delivered = _metric("delivered")
    event = _emit(server)

    assert deliver_due(server.platform) == 1
    [got] = receiver.received()
    assert got.path == "/ok"
    verify(endpoint["secret"], got.body, got.headers["Mux-Signature"])
    assert abs(int(got.headers["Mux-Signature"].split(",")[0][2:]) - time.time()) < 10
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == f"kinoray-webhooks/{kinoray.__version__}"
    assert got.headers["Webhook-Id"] == event.id
    assert json.loads(got.body) == envelope(event)
    assert got.body == endpoint_body(envelope(event))
    assert _metric("delivered") == delivered + 1

    assert deliver_due(server.platform) == 0  # nothing due any more
    [row] = server.client.get(f"{_endpoints(server)}/{endpoint['id']}/deliveries", timeout=10).json()["data"]
    assert row["event_id"] == event.id and row["event_type"] == "video.asset.ready"
    assert row["status"] == "delivered" and row["attempts"] == 1 and row["last_status"] == 200
    assert row["delivered_at"] is not None and row["next_attempt_at"] is None and row["last_error"] is None
    deliveries = server.client.get(f"{_endpoints(server)}/{disabled['id']}/deliveries", timeout=10).json()
    assert deliveries["data"] == []  # disabled endpoints get nothing queued


def test_failures_back_off_with_jitter_then_give_up(server: ApiServer, receiver: Receiver) -> None:
    endpoint = _create(server, receiver.url("/status/500"))
    event = _emit(server)
    row = _delivery(server, event.id)
    created, now = row.created_at, row.next_attempt_at
    assert now is not None
    failed, gave_up = _metric("failed"), _metric("gave_up")
    delays: list[timedelta] = []
    while True:
        assert deliver_due(server.platform, now=now) == 1
        row = _delivery(server, event.id)
        assert row.attempts == len(delays) + 1 and row.last_status == 500 and row.delivered_at is None
        if row.next_attempt_at is None:
            break
        delay = row.next_attempt_at - now
        base = RETRY_SCHEDULE[row.attempts - 1]
        assert base * 0.8 <= delay <= base * 1.2
        assert deliver_due(server.platform, now=row.next_attempt_at - timedelta(seconds=1)) == 0
        delays.append(delay)
        now = row.next_attempt_at

    # 5 s, 5 min, 30 min, 2 h, 5 h, 10 h: the 7th attempt lands 14-21 h in, and the next would pass 24 h.
    assert row.attempts == 7 and delays == sorted(delays)
    assert now - created < timedelta(hours=24)
    assert row.last_error is not None and row.last_error.startswith("gave up after 7 attempts")
    assert _metric("failed") == failed + 6 and _metric("gave_up") == gave_up + 1
    sent = receiver.received()
    assert len(sent) == 7
    for number, item in enumerate(sent):
        verify(endpoint["secret"], item.body, item.headers["Mux-Signature"])
        # The same envelope every time, but for Mux's `attempts`: the attempts before this one, oldest first.
        body = json.loads(item.body)
        assert {**body, "attempts": []} == envelope(event)
        assert [attempt["response_status_code"] for attempt in body["attempts"]] == [500] * number
        assert body["attempts"] == json.loads(sent[-1].body)["attempts"][:number]
    log = json.loads(sent[-1].body)["attempts"]
    assert len({attempt["id"] for attempt in log}) == 6
    assert {attempt["address"] for attempt in log} == {receiver.url("/status/500")}
    assert {attempt["max_attempts"] for attempt in log} == {7}
    assert {attempt["response_headers"]["content-type"] for attempt in log} == {"text/plain"}
    assert {attempt["response_body"] for attempt in log} == {"answered 500"}
    times = [datetime.fromisoformat(attempt["created_at"].replace("Z", "+00:00")) for attempt in log]
    assert times == sorted(times) and times[0] - created < timedelta(seconds=10)
    assert deliver_due(server.platform, now=now + timedelta(days=2)) == 0


def test_410_disables_the_endpoint_and_stops_its_deliveries(server: ApiServer, receiver: Receiver) -> None:
    endpoint = _create(server, receiver.url("/status/410"))
    first, second = _emit(server, object_id="a1"), _emit(server, object_id="a2")
    disabled = _metric("disabled")
    assert deliver_due(server.platform, limit=1) == 1
    assert len(receiver.received()) == 1 and _metric("disabled") == disabled + 1

    data = server.client.get(f"{_endpoints(server)}/{endpoint['id']}", timeout=10).json()["data"]
    assert data["enabled"] is False and "410" in data["disabled_reason"]
    rows = {row.event_id: row for row in (_delivery(server, first.id), _delivery(server, second.id))}
    sent = next(row for row in rows.values() if row.attempts == 1)
    stopped = next(row for row in rows.values() if row.attempts == 0)
    assert sent.last_status == 410 and sent.next_attempt_at is None
    assert stopped.next_attempt_at is None and "disabled" in (stopped.last_error or "")

    _emit(server, object_id="a3")
    assert deliver_due(server.platform) == 0
    assert deliver_due(server.platform, now=stopped.created_at + timedelta(hours=1)) == 0
    assert len(receiver.received()) == 1


def test_a_redirect_is_a_failure_and_is_not_followed(server: ApiServer, receiver: Receiver) -> None:
    _create(server, receiver.url("/redirect"))
    event = _emit(server)
    assert deliver_due(server.platform) == 1
    assert [item.path for item in receiver.received()] == ["/redirect"]
    row = _delivery(server, event.id)
    assert row.last_status == 302 and row.attempts == 1 and row.next_attempt_at is not None
    assert row.delivered_at is None and "302" in (row.last_error or "")


def test_a_slow_endpoint_times_out(server: ApiServer, receiver: Receiver) -> None:
    _create(server, receiver.url("/slow"))
    event = _emit(server)
    started = time.monotonic()
    assert deliver_due(server.platform) == 1
    assert time.monotonic() - started < 3 * TIMEOUT
    row = _delivery(server, event.id)
    assert row.last_status is None and "timed out" in (row.last_error or "") and row.next_attempt_at is not None


@pytest.mark.parametrize("path", [None, "/garbage"])
def test_an_unreachable_or_broken_endpoint_is_a_failure(server: ApiServer, receiver: Receiver,
                                                        path: str | None) -> None:
    from tests.conftest import free_port

    _create(server, f"http://127.0.0.1:{free_port()}/hook" if path is None else receiver.url(path))
    event = _emit(server)
    assert deliver_due(server.platform) == 1
    row = _delivery(server, event.id)
    assert row.last_status is None and "connection failed" in (row.last_error or "")
    assert row.attempts == 1 and row.next_attempt_at is not None


def test_the_url_policy_is_checked_again_at_delivery(server: ApiServer, receiver: Receiver) -> None:
    _create(server, receiver.url("/ok"))
    event = _emit(server)
    strict = server.settings.model_copy(
        update={"api": server.settings.api.model_copy(update={"allow_private_inputs": False})})
    platform = Platform(settings=strict, db=server.platform.db, store=server.platform.store,
                        limiter=server.platform.limiter, resolver=server.platform.resolver)
    assert deliver_due(platform) == 1
    assert receiver.received() == []
    row = _delivery(server, event.id)
    assert "URL refused" in (row.last_error or "") and row.next_attempt_at is not None


def test_a_crashed_senders_claim_runs_out(server: ApiServer, receiver: Receiver) -> None:
    _create(server, receiver.url("/ok"))
    event = _emit(server)
    claimed_at = utcnow()
    assert len(webhooks._claim(server.platform, 50, claimed_at, workers=8)) == 1  # ...and the sender dies
    assert deliver_due(server.platform) == 0
    assert deliver_due(server.platform, now=claimed_at + timedelta(seconds=TIMEOUT + 61)) == 1
    assert [item.headers["Webhook-Id"] for item in receiver.received()] == [event.id]
    assert _delivery(server, event.id).attempts == 1


def test_concurrent_senders_never_send_twice(server: ApiServer, receiver: Receiver) -> None:
    if server.platform.db.dialect != "postgresql":
        pytest.skip("SQLite runs one sender; claims are exclusive only on PostgreSQL (FOR UPDATE SKIP LOCKED)")
    _create(server, receiver.url("/ok"))
    events = {_emit(server, object_id=f"a{index}").id for index in range(24)}
    barrier = threading.Barrier(4)
    counts: list[int] = []

    def sender() -> None:
        barrier.wait()
        while sent := deliver_due(server.platform, limit=3, workers=2):
            counts.append(sent)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    ids = [item.headers["Webhook-Id"] for item in receiver.received()]
    assert sorted(ids) == sorted(events) and sum(counts) == len(events)
    assert all(_delivery(server, event_id).delivered_at is not None for event_id in events)
