"""Live chat (``/live/v1/chat/{playback_id}`` on the delivery edge; :mod:`kinoray.control.chat`), driven by the
``websockets`` client as viewers and the management API as the moderator, on SQLite and PostgreSQL.

Checked: a room is entered through a live stream's playback id (public, or signed with a valid token) and no
other; joining sends the recent history; a message reaches every viewer — on the production edge's Granian worker
processes and on another edge process too; a moderator's delete reaches every viewer and the list;
bad frames, texts and names get typed errors and the connection goes on; a viewer sending too fast is refused
with ``too_many_requests`` while the others are served.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.test_playback_signed import mint


def _ws(base: str) -> str:
    return base.replace("http://", "ws://", 1)


@pytest.fixture(scope="module")
def stream(api) -> dict[str, Any]:
    made = api.client.post(f"{api.url}/video/v1/live-streams", json={"playback_policies": ["public", "signed"]},
                           timeout=10)
    assert made.status_code == 201, made.text
    data = made.json()["data"]
    ids = {item["policy"]: item["id"] for item in data["playback_ids"]}
    return {"id": data["id"], "public": ids["public"], "signed": ids["signed"]}


@contextmanager
def viewer(base: str, playback_id: str, **query: str) -> Iterator[ClientConnection]:
    params = "&".join(f"{name}={value}" for name, value in query.items())
    with connect(f"{_ws(base)}/live/v1/chat/{playback_id}" + (f"?{params}" if params else ""),
                 open_timeout=10, close_timeout=5) as connection:
        yield connection


def _next(connection: ClientConnection, kind: str, timeout: float = 10) -> dict[str, Any]:
    """The next frame of ``kind``, skipping others (a message of an earlier step still on its way)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(connection.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame["type"] == kind:
            return frame


def _send(connection: ClientConnection, text: Any, **extra: Any) -> None:
    connection.send(json.dumps({"type": "message", "text": text, **extra}))


def test_messages_reach_every_viewer_and_a_moderators_delete_too(api, stream) -> None:
    with viewer(api.edge_url, stream["public"], name="Ann") as ann, \
            viewer(api.edge_url, stream["public"], name="Bob") as bob:
        assert _next(ann, "history")["messages"] == [] and _next(bob, "history")["messages"] == []
        _send(ann, "  hello, room  ")
        seen = [_next(connection, "message")["message"] for connection in (ann, bob)]
        assert seen[0] == seen[1]
        message = seen[0]
        assert (message["name"], message["text"], message["deleted"]) == ("Ann", "hello, room", False)
        assert message["live_stream_id"] == stream["id"] and abs(int(message["created_at"]) - time.time()) < 60
        _send(bob, "hi Ann", name="Robert")  # a frame may name its sender
        assert _next(ann, "message")["message"]["name"] == "Robert"
        with viewer(api.edge_url, stream["public"]) as late:  # joins after: the history has both
            assert [m["text"] for m in _next(late, "history")["messages"]] == ["hello, room", "hi Ann"]
            listed = api.client.get(f"{api.url}/video/v1/live-streams/{stream['id']}/chat-messages", timeout=10)
            assert listed.status_code == 200, listed.text
            assert [m["text"] for m in listed.json()["data"]] == ["hi Ann", "hello, room"]  # newest first
            gone = api.client.delete(
                f"{api.url}/video/v1/live-streams/{stream['id']}/chat-messages/{message['id']}", timeout=10)
            assert gone.status_code == 204, gone.text
            for connection in (ann, bob, late):
                assert _next(connection, "deleted") == {"type": "deleted", "id": message["id"]}
        listed = api.client.get(f"{api.url}/video/v1/live-streams/{stream['id']}/chat-messages", timeout=10).json()
        assert [(m["text"], m["deleted"]) for m in listed["data"]] == [("hi Ann", False), ("", True)]
    with viewer(api.edge_url, stream["public"]) as later:
        assert [m["text"] for m in _next(later, "history")["messages"]] == ["hi Ann"]  # the deleted one is gone
    assert api.client.delete(f"{api.url}/video/v1/live-streams/{stream['id']}/chat-messages/{'x' * 32}",
                             timeout=10).status_code == 404
    assert api.client.get(f"{api.url}/video/v1/live-streams/{'x' * 32}/chat-messages",
                          timeout=10).status_code == 404


@pytest.mark.parametrize(("frame", "error"), [
    ("not json", "invalid_parameters"),
    (json.dumps({"type": "typing"}), "invalid_parameters"),
    (json.dumps({"type": "message", "text": "   "}), "invalid_parameters"),
    (json.dumps({"type": "message", "text": "x" * 501}), "invalid_parameters"),
    (json.dumps({"type": "message", "text": "bell\u0007"}), "invalid_parameters"),
    (json.dumps({"type": "message", "text": 5}), "invalid_parameters"),
    (json.dumps({"type": "message", "text": "ok", "name": "two\nlines"}), "invalid_parameters"),
], ids=["not-json", "other-type", "blank", "too-long", "control-character", "not-a-string", "two-line-name"])
def test_bad_frames_get_typed_errors_and_the_connection_goes_on(api, stream, frame: str, error: str) -> None:
    with viewer(api.edge_url, stream["public"]) as connection:
        _next(connection, "history")
        connection.send(frame)
        assert _next(connection, "error")["error"]["type"] == error
        _send(connection, "still here")
        assert _next(connection, "message")["message"]["text"] == "still here"


def test_a_fast_sender_is_limited_and_the_others_are_served(api, stream) -> None:
    burst = api.platform.settings.live.chat_burst
    with viewer(api.edge_url, stream["public"]) as fast, viewer(api.edge_url, stream["public"]) as calm:
        _next(fast, "history")
        _next(calm, "history")
        for number in range(burst + 1):
            _send(fast, f"spam {number}")
        refused = _next(fast, "error")["error"]
        assert refused["type"] == "too_many_requests"
        received = [_next(calm, "message")["message"]["text"] for _ in range(burst)]
        assert received == [f"spam {n}" for n in range(burst)]
        _send(calm, "calm one")  # another viewer's bucket is its own
        assert _next(calm, "message")["message"]["text"] == "calm one"


def test_only_a_live_streams_playback_ids_open_a_room(api, stream, media_dir, tmp_path_factory) -> None:
    from tests.test_playback import packaged_asset, publish

    _, media = packaged_asset(media_dir, tmp_path_factory.getbasetemp())
    _, (asset_playback_id,) = publish(api, media)
    key = api.client.post(f"{api.url}/video/v1/signing-keys", timeout=10).json()["data"]
    token = mint(key["id"], base64.b64decode(key["private_key"]), stream["signed"])
    for playback_id, query, error in ((asset_playback_id, {}, "not_found"), ("A" * 32, {}, "not_found"),
                                      ("not-an-id", {}, "not_found"), (stream["signed"], {}, "playback_forbidden"),
                                      (stream["signed"], {"token": "junk"}, "playback_forbidden")):
        with viewer(api.edge_url, playback_id, **query) as refused:
            assert _next(refused, "error")["error"]["type"] == error, playback_id
            with pytest.raises(Exception, match="1008"):
                refused.recv(timeout=10)
    with viewer(api.edge_url, stream["signed"], token=token) as admitted:
        assert _next(admitted, "history")["type"] == "history"


def test_viewers_on_every_process_share_the_room(api, stream) -> None:
    """Viewers on the production edge's two Granian workers and on the test's own edge process: what one
    process's viewer sends reaches the others' (the room is the database's, each process reads it), and so does
    a moderator's delete made through the API."""
    process, url = api.start_granian_edge(workers=2)
    try:
        with ExitStack() as stack:
            connections = [stack.enter_context(connect(f"{_ws(url)}/live/v1/chat/{stream['public']}",
                                                       open_timeout=10))
                           for _ in range(8)]  # fresh connections, spread over both workers by the kernel
            local = stack.enter_context(connect(f"{_ws(api.edge_url)}/live/v1/chat/{stream['public']}",
                                                open_timeout=10))
            connections.append(local)
            for connection in connections:
                _next(connection, "history")
            _send(connections[0], "from a Granian worker")
            sent = [_next(connection, "message")["message"] for connection in connections]
            assert {message["text"] for message in sent} == {"from a Granian worker"}
            _send(local, "from the test's edge")
            for connection in connections:
                assert _next(connection, "message")["message"]["text"] == "from the test's edge"
            gone = api.client.delete(
                f"{api.url}/video/v1/live-streams/{stream['id']}/chat-messages/{sent[0]['id']}", timeout=10)
            assert gone.status_code == 204
            for connection in connections:
                assert _next(connection, "deleted")["id"] == sent[0]["id"]
        with connect(f"{_ws(url)}/live/v1/other", open_timeout=10) as other:  # no other WebSocket
            with pytest.raises(Exception, match="1003"):
                other.recv(timeout=10)
    finally:
        process.stop()
