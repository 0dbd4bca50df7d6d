"""Live chat: a room per live stream, which viewers enter through one of the stream's playback ids.

A viewer holds a WebSocket on the delivery edge (``/live/v1/chat/{playback_id}``,
:mod:`kinoray.serve.routes.chat`); what they may enter is what their playback id opens (:func:`chat_room`: a
live stream's id — public, or signed with a token for audience ``v`` whose playback restriction admits them —
idle or active). Messages are rows (:class:`~kinoray.store.models.ChatMessage`), so every edge process and the
management API see the same room: each process reads what changed in the rooms its viewers are in
(:class:`RoomFollower`, one indexed read per process per ``live.chat_poll_seconds``) and fans it out. Moderators
delete messages through the management API (:func:`delete_message`): the text is blanked and every viewer is
told to drop it.

Limits: a message is 1 to ``live.chat_max_chars`` characters after trimming, with no control characters but
newline and tab; a name (shown beside it) 1 to 64; a viewer connection sends at most ``live.chat_burst`` messages
at once and ``live.chat_messages_per_second`` after that (:class:`RateLimitedError` with its retry time).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from kinoray.control.lookup import find
from kinoray.control.platform import Platform
from kinoray.control.restrictions import Viewer
from kinoray.errors import InvalidParametersError, NotFoundError
from kinoray.store.models import ChatMessage, LiveStream, new_id, utcnow

__all__ = ["ChatMessageView", "ChatRoom", "RoomFollower", "chat_room", "clean_name", "clean_text", "delete_message",
           "history", "list_messages", "post_message"]

MAX_NAME_CHARS = 64
_KEPT_CONTROLS = frozenset("\n\t")


class ChatMessageView(BaseModel):
    """A chat message as viewers and the API see it; ``deleted`` ones have no text."""

    id: str
    live_stream_id: str
    name: str
    text: str
    created_at: str  # Unix seconds, as Mux writes times
    deleted: bool


@dataclass(frozen=True)
class ChatRoom:
    """The room a playback id opened: the live stream's."""

    live_stream_id: str
    playback_id: str


def chat_room(platform: Platform, playback_id: str, token: str | None, viewer: Viewer | None = None) -> ChatRoom:
    """The chat room ``playback_id`` opens to a viewer with ``token`` (signed ids) and ``viewer``'s headers.

    Raises:
        NotFoundError: not a live stream's playback id (unknown, deleted, or an asset's).
        PlaybackForbiddenError, PlaybackRestrictedError: as for the stream itself.
    """
    record, _ = platform.resolver.admit(playback_id, token, "v", viewer)
    if record.live_stream_id is None:
        raise NotFoundError(f"playback id {playback_id} is not a live stream's: it has no chat room")
    return ChatRoom(live_stream_id=record.live_stream_id, playback_id=playback_id)


def _clean(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidParametersError(f"{what} must be a string")
    text = value.strip()
    if not text:
        raise InvalidParametersError(f"{what} is empty")
    if len(text) > limit:
        raise InvalidParametersError(f"{what} is longer than {limit} characters")
    if any(unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co") and char not in _KEPT_CONTROLS for char in text):
        raise InvalidParametersError(f"{what} holds control characters")
    return text


def clean_text(value: object, limit: int) -> str:
    """A message's text, trimmed, or :class:`InvalidParametersError` saying why not."""
    return _clean(value, "text", limit)


def clean_name(value: object) -> str:
    """A viewer's display name, trimmed (one line), or :class:`InvalidParametersError` saying why not."""
    name = _clean(value, "name", MAX_NAME_CHARS)
    if "\n" in name or "\t" in name:
        raise InvalidParametersError("name must be one line")
    return name


def _view(message: ChatMessage) -> ChatMessageView:
    deleted = message.deleted_at is not None
    return ChatMessageView(id=message.id, live_stream_id=message.live_stream_id, name=message.name,
                           text="" if deleted else message.text,
                           created_at=str(int(message.created_at.timestamp())), deleted=deleted)


def post_message(platform: Platform, room: ChatRoom, viewer_id: str, name: object, text: object) -> ChatMessageView:
    """A viewer's message, stored (every process's viewers get it at their next read). The caller rate-limits.

    Raises:
        InvalidParametersError: an empty, too long or control-character text or name.
        NotFoundError: the live stream was deleted meanwhile.
    """
    settings = platform.settings.live
    clean, who = clean_text(text, settings.chat_max_chars), clean_name(name)
    now = utcnow()
    with platform.db.session() as session:
        if session.get(LiveStream, room.live_stream_id) is None:
            raise NotFoundError("the live stream of this chat room was deleted")
        message = ChatMessage(id=new_id(), live_stream_id=room.live_stream_id, viewer_id=viewer_id[:64], name=who,
                              text=clean, created_at=now, updated_at=now)
        session.add(message)
        session.flush()
        return _view(message)


def history(platform: Platform, live_stream_id: str, count: int) -> list[ChatMessageView]:
    """The room's ``count`` newest messages still shown, oldest first."""
    if not count:
        return []
    with platform.db.reader() as session:
        rows = session.scalars(sa.select(ChatMessage).where(
            ChatMessage.live_stream_id == live_stream_id, ChatMessage.deleted_at.is_(None))
            .order_by(ChatMessage.created_at.desc(), ChatMessage.id.desc()).limit(count)).all()
        return [_view(row) for row in reversed(rows)]


class RoomFollower:
    """What changed in a set of rooms since the last :meth:`read`: one process's view of its viewers' rooms.

    Each read asks for rows changed (``updated_at``) since the previous read less ``lag_seconds``, so a row
    stamped just before a read but committed just after it is still seen next time; what was already returned
    is remembered for that overlap and not returned again."""

    def __init__(self, start: datetime, lag_seconds: float = 2.0) -> None:
        self.lag = timedelta(seconds=lag_seconds)
        self.cursor = start
        self._seen: dict[tuple[str, bool], datetime] = {}

    def read(self, platform: Platform, live_stream_ids: Sequence[str], limit: int = 1000) -> list[ChatMessageView]:
        """New and deleted messages of these rooms since the last read, in change order (at most ``limit``)."""
        if not live_stream_ids:
            return []
        with platform.db.reader() as session:
            rows = session.scalars(sa.select(ChatMessage).where(
                ChatMessage.live_stream_id.in_(list(live_stream_ids)),
                ChatMessage.updated_at >= self.cursor - self.lag)
                .order_by(ChatMessage.updated_at, ChatMessage.id).limit(limit)).all()
            fresh = [(row, (row.id, row.deleted_at is not None)) for row in rows]
            out = [_view(row) for row, key in fresh if key not in self._seen]
            for row, key in fresh:
                self._seen[key] = row.updated_at
        if rows:
            self.cursor = max(self.cursor, rows[-1].updated_at)
        horizon = self.cursor - self.lag
        self._seen = {key: at for key, at in self._seen.items() if at >= horizon}
        return out


def list_messages(session: Session, live_stream_id: str, limit: int, page: int) -> list[ChatMessageView]:
    """``GET /video/v1/live-streams/{id}/chat-messages``: the room's messages, newest first, deleted ones
    included (as ``deleted``, without text), Mux's ``limit``/``page`` paging."""
    find(session, LiveStream, live_stream_id, what="live stream")
    rows = session.scalars(sa.select(ChatMessage).where(ChatMessage.live_stream_id == live_stream_id)
                           .order_by(ChatMessage.created_at.desc(), ChatMessage.id.desc())
                           .limit(limit).offset((page - 1) * limit)).all()
    return [_view(row) for row in rows]


def delete_message(session: Session, live_stream_id: str, message_id: str) -> None:
    """A moderator's ``DELETE``: the message's text is blanked and viewers are told to drop it. Deleting it
    again changes nothing."""
    find(session, LiveStream, live_stream_id, what="live stream")
    message = find(session, ChatMessage, message_id, what="chat message", for_update=True)
    if message.live_stream_id != live_stream_id:
        raise NotFoundError(f"no chat message {message_id[:80]!r} in this live stream")
    if message.deleted_at is None:
        now = utcnow()
        message.deleted_at, message.updated_at, message.text = now, now, ""
