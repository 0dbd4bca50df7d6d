"""Live chat over WebSocket on the delivery edge, and its moderation on the management API
(:mod:`kinoray.control.chat` holds the rules).

Viewers: ``GET /live/v1/chat/{playback_id}`` upgraded to a WebSocket (``?token=`` for a signed id,
``?name=`` for the name shown beside their messages). JSON frames, server to viewer::

    {"type": "history", "messages": [<message>, ...]}        once, on joining: the newest live.chat_history
    {"type": "message", "message": <message>}                 a message in the room (the viewer's own too)
    {"type": "deleted", "id": "..."}                          a moderator deleted it: drop it
    {"type": "error", "error": {"type": "...", "messages": [...]}}   a message of the viewer's was refused

and viewer to server ``{"type": "message", "text": "...", "name": "..."?}``. A playback id that opens no room
gets its typed error as an ``error`` frame, then the socket is closed (1008). A viewer falling
``live.chat_queue_messages`` behind is closed with 1013 (try again later).

One :class:`ChatHub` per process follows the rooms its viewers are in — one database read per
``live.chat_poll_seconds`` for all of them — and fans changes out to each viewer's bounded queue, so every edge
process and the API's moderation see one room.

Moderators (access token): ``GET /video/v1/live-streams/{id}/chat-messages`` and
``DELETE /video/v1/live-streams/{id}/chat-messages/{message_id}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from typing import Any

from fastapi import APIRouter, Response, WebSocket, WebSocketDisconnect

from kinoray.control.chat import (
    ChatMessageView,
    ChatRoom,
    RoomFollower,
    chat_room,
    delete_message,
    history,
    list_messages,
    post_message,
)
from kinoray.control.platform import Platform
from kinoray.control.ratelimit import LocalRateLimiter
from kinoray.control.restrictions import Viewer
from kinoray.errors import ApiError, InvalidParametersError, KinorayError, RateLimitedError
from kinoray.serve.deps import CurrentToken, PageDep, PlatformDep
from kinoray.serve.schemas import AUTHENTICATED, Listing, error_responses
from kinoray.store.models import new_id, utcnow

__all__ = ["ChatHub", "management", "viewer"]

log = logging.getLogger(__name__)

viewer = APIRouter(tags=["live chat"])
management = APIRouter(prefix="/video/v1/live-streams", tags=["live streams"])

_CLOSE_LAGGING = 1013  # try again later
_CLOSE_POLICY = 1008  # refused: the error is the reason


class _Subscriber:
    def __init__(self, limit: int) -> None:
        self.queue: asyncio.Queue[ChatMessageView | None] = asyncio.Queue(limit)
        self.lagging = False


class ChatHub:
    """This process's rooms with viewers in them, followed with one read per poll and fanned out to each viewer's
    queue (a full queue marks that viewer lagging: it is closed, the others go on)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.rooms: dict[str, set[_Subscriber]] = {}
        self.follower = RoomFollower(utcnow())
        self.task: asyncio.Task[None] | None = None

    def join(self, room: ChatRoom) -> _Subscriber:
        subscriber = _Subscriber(self.platform.settings.live.chat_queue_messages)
        self.rooms.setdefault(room.live_stream_id, set()).add(subscriber)
        if self.task is None or self.task.done():
            self.follower = RoomFollower(utcnow())
            self.task = asyncio.get_running_loop().create_task(self._follow(), name="kinoray-chat-hub")
        return subscriber

    def leave(self, room: ChatRoom, subscriber: _Subscriber) -> None:
        members = self.rooms.get(room.live_stream_id)
        if members is not None:
            members.discard(subscriber)
            if not members:
                del self.rooms[room.live_stream_id]

    async def _follow(self) -> None:
        poll = self.platform.settings.live.chat_poll_seconds
        while self.rooms:
            await asyncio.sleep(poll)
            try:
                changes = await asyncio.to_thread(self.follower.read, self.platform, list(self.rooms))
            except KinorayError as error:  # the database is away: viewers wait, the next poll tries again
                log.warning("chat rooms not read", extra={"error": str(error)})
                continue
            for message in changes:
                for subscriber in tuple(self.rooms.get(message.live_stream_id, ())):
                    try:
                        subscriber.queue.put_nowait(message)
                    except asyncio.QueueFull:
                        subscriber.lagging = True
                        with contextlib.suppress(asyncio.QueueEmpty):
                            subscriber.queue.get_nowait()
                        subscriber.queue.put_nowait(None)  # wakes the sender, which closes


_hubs: dict[int, ChatHub] = {}
_hubs_lock = threading.Lock()


def hub_of(platform: Platform) -> ChatHub:
    """The process's hub for ``platform`` (one per event loop's platform)."""
    with _hubs_lock:
        found = _hubs.get(id(platform))
        if found is None or found.platform is not platform:
            found = _hubs[id(platform)] = ChatHub(platform)
        return found


def _error_frame(error: ApiError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error.type, "messages": [str(error)]}}


@viewer.websocket("/live/v1/chat/{playback_id}")
async def chat(websocket: WebSocket, playback_id: str, platform: PlatformDep, token: str | None = None,
               name: str = "viewer") -> None:
    """A viewer in the chat room of a live stream's playback id (see the module's docstring)."""
    headers = websocket.headers
    try:
        room = await asyncio.to_thread(chat_room, platform, playback_id, token,
                                       Viewer(headers.get("referer"), headers.get("user-agent")))
    except ApiError as error:
        await websocket.accept()
        await websocket.send_json(_error_frame(error))
        await websocket.close(code=_CLOSE_POLICY, reason=error.type)
        return
    settings = platform.settings.live
    await websocket.accept()
    hub = hub_of(platform)
    subscriber = hub.join(room)
    viewer_id = new_id()
    limiter = LocalRateLimiter(settings.chat_messages_per_second, settings.chat_burst)
    try:
        shown = await asyncio.to_thread(history, platform, room.live_stream_id, settings.chat_history)
        await websocket.send_json({"type": "history", "messages": [m.model_dump() for m in shown]})
        already = {message.id for message in shown}
        receiving = asyncio.create_task(_receive(websocket, platform, room, viewer_id, name, limiter))
        try:
            while not receiving.done():
                waiting = asyncio.create_task(subscriber.queue.get())
                done, _ = await asyncio.wait({waiting, receiving}, return_when=asyncio.FIRST_COMPLETED)
                if waiting not in done:
                    waiting.cancel()
                    break
                message = waiting.result()
                if message is None or subscriber.lagging:
                    await websocket.close(code=_CLOSE_LAGGING, reason="too far behind: join again")
                    break
                if message.deleted:
                    await websocket.send_json({"type": "deleted", "id": message.id})
                elif message.id not in already:
                    await websocket.send_json({"type": "message", "message": message.model_dump()})
            if receiving.done() and (problem := receiving.exception()) is not None and \
                    not isinstance(problem, WebSocketDisconnect):
                raise problem
        finally:
            receiving.cancel()
    except WebSocketDisconnect:
        pass
    finally:
        hub.leave(room, subscriber)


async def _receive(websocket: WebSocket, platform: Platform, room: ChatRoom, viewer_id: str, name: str,
                   limiter: LocalRateLimiter) -> None:
    """The viewer's frames: each message is rate-limited, checked and stored; a refusal is sent back typed."""
    largest = 4 * platform.settings.live.chat_max_chars + 1024  # a longest message's JSON, escaped
    while True:
        received = await websocket.receive()
        if received["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(received.get("code", 1000))
        frame = received.get("text") or (received.get("bytes") or b"").decode("utf-8", "replace")
        try:
            body = json.loads(frame) if len(frame) <= largest else None
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or body.get("type") != "message":
            await websocket.send_json(_error_frame(InvalidParametersError(
                'a chat frame is {"type": "message", "text": "..."}')))
            continue
        try:
            decision = limiter.hit(viewer_id)
            if not decision.allowed:
                raise RateLimitedError(f"at most {platform.settings.live.chat_burst} messages at once and "
                                       f"{platform.settings.live.chat_messages_per_second:g}/s after",
                                       decision.retry_after, decision.limit)
            await asyncio.to_thread(post_message, platform, room, viewer_id, body.get("name", name),
                                    body.get("text"))
        except ApiError as error:
            await websocket.send_json(_error_frame(error))


@management.get("/{live_stream_id}/chat-messages", response_model=Listing[ChatMessageView],
                responses=error_responses(*AUTHENTICATED, 404))
def list_chat(live_stream_id: str, platform: PlatformDep, token: CurrentToken,
              page: PageDep) -> Listing[ChatMessageView]:
    """The live stream's chat messages, newest first; deleted ones are listed with ``deleted`` and no text."""
    with platform.db.reader() as session:
        return Listing(data=list_messages(session, live_stream_id, page.limit, page.page))


@management.delete("/{live_stream_id}/chat-messages/{message_id}", status_code=204,
                   responses=error_responses(*AUTHENTICATED, 404))
def delete_chat(live_stream_id: str, message_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Moderation: the message disappears from every viewer's room."""
    with platform.db.session() as session:
        delete_message(session, live_stream_id, message_id)
    return Response(status_code=204)
