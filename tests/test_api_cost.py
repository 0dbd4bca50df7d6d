"""What a management-API read costs, in the parts the code decides (SQLite and PostgreSQL): the database
statements and transactions of a read, authentication from memory for a token verified lately and the bound on
seeing its revocation (``api.token_cache_seconds``), one pool of worker threads per event loop
(:func:`kinoray.serve.asgi.keep_worker_threads`). The CPU itself is ``benchmarks/api_cpu.py``'s."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio.to_thread
import pytest
import requests
import sqlalchemy as sa

from kinoray.control.auth import Authenticator, create_token, revoke_token
from kinoray.errors import AuthenticationError
from kinoray.serve.asgi import keep_worker_threads
from kinoray.store.models import AccessToken, utcnow

INPUT = "s3://media-bucket/in/clip.mp4"  # accepted without DNS; the runner is not started in this module


@contextmanager
def database_work(engine: sa.Engine) -> Iterator[dict[str, list[str]]]:
    """The statements (first word) and the transactions begun on ``engine`` inside the block, any thread."""
    seen: dict[str, list[str]] = {"statements": [], "transactions": []}

    def statement(_connection: Any, _cursor: Any, text: str, *_: Any) -> None:
        seen["statements"].append(text.split(None, 1)[0].upper())

    def begin(_connection: Any) -> None:
        seen["transactions"].append("begin")

    sa.event.listen(engine, "before_cursor_execute", statement)
    sa.event.listen(engine, "begin", begin)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", statement)
        sa.event.remove(engine, "begin", begin)


def _selects(seen: dict[str, list[str]]) -> list[str]:
    return [word for word in seen["statements"] if word != "BEGIN"]  # SQLite's BEGIN is a statement of its own


def test_a_read_is_one_transaction_and_no_token_read(api) -> None:
    made = api.client.post(f"{api.url}/video/v1/assets", json={
        "inputs": [{"url": INPUT}], "playback_policies": ["public", "signed"],
        "static_renditions": [{"resolution": "highest"}, {"resolution": "audio-only"}]})
    assert made.status_code == 201, made.text
    asset_id = made.json()["data"]["id"]
    assert api.client.get(f"{api.url}/video/v1/assets", timeout=10).status_code == 200  # token remembered, touched
    with database_work(api.platform.db.engine) as one:
        asset = api.client.get(f"{api.url}/video/v1/assets/{asset_id}", timeout=10).json()["data"]
    with database_work(api.platform.db.engine) as page:
        listed = api.client.get(f"{api.url}/video/v1/assets", timeout=10).json()["data"]
    # one SELECT joins the asset's playback ids, upload and static renditions (2 x 2 rows, one asset)
    assert _selects(one) == ["SELECT"] and len(one["transactions"]) == 1
    # a page: the assets with their playback ids and upload, then their static renditions
    assert _selects(page) == ["SELECT", "SELECT"] and len(page["transactions"]) == 1
    assert sorted(p["policy"] for p in asset["playback_ids"]) == ["public", "signed"]
    assert [f["name"] for f in asset["static_renditions"]["files"]] == ["highest.mp4", "audio.m4a"]
    assert next(row for row in listed if row["id"] == asset_id) == asset


def test_a_token_revoked_by_another_process_is_refused_within_the_bound(api) -> None:
    token = api.new_token("revoked-elsewhere")
    url = f"{api.url}/video/v1/assets"
    assert requests.get(url, auth=token, timeout=5).status_code == 200  # verified, its row now remembered
    other = sa.create_engine(api.platform.db.url)  # another process's connection: this one hears nothing
    try:
        with other.begin() as connection:
            connection.execute(sa.update(AccessToken).where(AccessToken.id == token[0]).values(revoked_at=utcnow()))
    finally:
        other.dispose()
    revoked = time.monotonic()
    bound = api.settings.api.token_cache_seconds
    while True:  # judged by when each request was sent: on a loaded machine an answer may come late
        sent = time.monotonic()
        if requests.get(url, auth=token, timeout=30).status_code == 401:
            break
        assert sent - revoked < bound + 0.5, "a revoked token still worked past the bound"
        time.sleep(0.05)


def _basic(token_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{token_id}:{secret}".encode()).decode()


def test_a_remembered_token_is_read_again_after_token_cache_seconds(api) -> None:
    now = [1000.0]
    authenticator = Authenticator(api.platform.db, api.settings.api, clock=lambda: now[0])
    with api.platform.db.session() as session:
        info, secret = create_token(session, name="clocked")
    header = _basic(info.id, secret)
    assert authenticator.remembered(header) is None  # never read: the database decides
    assert authenticator.authenticate(header, "192.0.2.1").id == info.id
    assert authenticator.remembered(header) == info  # from memory: no database, no scrypt
    assert authenticator.remembered(_basic(info.id, "not-the-secret")) is None
    with api.platform.db.engine.begin() as connection:  # revoked the way another process would
        connection.execute(sa.update(AccessToken).where(AccessToken.id == info.id).values(revoked_at=utcnow()))
    now[0] += api.settings.api.token_cache_seconds - 0.1
    assert authenticator.remembered(header) == info  # the documented staleness, no longer than the bound
    now[0] += 0.1
    assert authenticator.remembered(header) is None
    with pytest.raises(AuthenticationError):
        authenticator.authenticate(header, "192.0.2.1")


def test_revoking_in_this_process_is_seen_at_once_after_commit(api) -> None:
    authenticator = Authenticator(api.platform.db, api.settings.api, clock=lambda: 1000.0)  # time stands still
    with api.platform.db.session() as session:
        info, secret = create_token(session, name="revoked-here")
    header = _basic(info.id, secret)
    authenticator.authenticate(header, "192.0.2.1")
    with api.platform.db.session() as session:
        revoke_token(session, info.id)
        assert authenticator.remembered(header) == info  # not committed yet: still valid
    assert authenticator.remembered(header) is None
    with pytest.raises(AuthenticationError):
        authenticator.authenticate(header, "192.0.2.1")
    with api.platform.db.session() as session:  # a revocation rolled back revokes nothing
        info, secret = create_token(session, name="kept")
    header = _basic(info.id, secret)
    authenticator.authenticate(header, "192.0.2.1")
    with pytest.raises(RuntimeError), api.platform.db.session() as session:
        revoke_token(session, info.id)
        raise RuntimeError("rolled back")
    assert authenticator.authenticate(header, "192.0.2.1") == info


def _worker_threads_of_two_requests(keep: bool) -> tuple[threading.Thread, threading.Thread]:
    """The worker thread ``anyio.to_thread`` ran each of two requests in, on a loop run with ``run_forever`` (as a
    Ray Serve replica's is), each request its own task (as a server runs them)."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()

    async def pin() -> bool:
        return keep_worker_threads()

    async def request() -> threading.Thread:
        return await anyio.to_thread.run_sync(threading.current_thread)

    async def stop() -> None:
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    try:
        if keep:
            assert asyncio.run_coroutine_threadsafe(pin(), loop).result(10)
        first = asyncio.run_coroutine_threadsafe(request(), loop).result(10)
        second = asyncio.run_coroutine_threadsafe(request(), loop).result(10)
        return first, second
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()


def test_keep_worker_threads_reuses_one_thread_across_requests() -> None:
    first, second = _worker_threads_of_two_requests(keep=False)
    assert first is not second  # what a replica did: a thread started and stopped per request
    first, second = _worker_threads_of_two_requests(keep=True)
    assert first is second


def test_keep_worker_threads_off_a_loop_declines() -> None:
    assert keep_worker_threads() is False
