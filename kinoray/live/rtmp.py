"""RTMP ingest: the server OBS, FFmpeg and every hardware encoder publish to (``rtmp://host:port/app/KEY``).

Adobe's RTMP specification (1.0), the part a publisher uses: the handshake, the chunk stream (chunk sizes,
the four chunk header formats, extended timestamps, aborts), the protocol control messages, the NetConnection
and NetStream commands (``connect``, ``releaseStream``/``FCPublish``, ``createStream``, ``publish``,
``FCUnpublish``/``deleteStream``), metadata (``@setDataFrame``/``onMetaData``), audio, video and aggregate
messages. Playing over RTMP is not offered: viewers watch over HLS from the delivery edge.

**The key is checked before any media is accepted.** ``publish`` names the stream key; the server asks
``authorize`` (the control plane: is this an enabled live stream's key?) and answers
``NetStream.Publish.Start`` only if it says yes. Otherwise the publisher gets ``NetStream.Publish.BadName`` and
the connection is closed, and :data:`~kinoray.telemetry.LIVE_INGEST_REFUSED` counts why. Nothing the publisher
sends before that reaches a :class:`Publisher`.

**RTMPS** (``rtmps://host:tls_port/app/KEY``): given an :class:`ssl.SSLContext`, the server also listens on
``tls_port`` and speaks the same RTMP inside TLS — the same key check, limits and sessions (one count of
connections, one publisher per key across both ports); the TLS handshake must finish within
``handshake_seconds`` too, so a stalled one never holds a connection. :attr:`PublishRequest.protocol` says which
the publisher used.

**Bounded per connection:** a handshake must finish within ``handshake_seconds``; a connection that sends
nothing for ``idle_seconds`` is closed; one message is at most ``max_message_bytes``; a chunk size, chunk stream
count and AMF payload are limited. A malformed stream ends that connection with an
:class:`~kinoray.errors.IngestProtocolError` in the log and the publisher's :meth:`Publisher.ended` — nothing
else: other connections go on.

Why our own code rather than a library: the Python RTMP servers on PyPI (pyrtmp 0.3, rtmplite3) configure the
root logger at import, parse chunks bit by bit, and have no limits; FFmpeg's listener (``-listen 1`` through
PyAV) takes one publisher per port and cannot refuse a key before reading media. What a publisher needs of RTMP
is small and fully specified, and here each limit and refusal is ours to test. The chunk layer
(:class:`ChunkReader`, :func:`chunk_message`) also serves the simulcast pusher's client side
(:mod:`kinoray.live.simulcast`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from kinoray.errors import IngestProtocolError, IngestRefusedError, InvalidMediaError
from kinoray.live.amf import AmfValue, decode_all, encode
from kinoray.media.flv import AUDIO, SCRIPT, VIDEO, FlvTag, read_tags
from kinoray.telemetry import LIVE_INGEST_REFUSED

__all__ = [
    "MSG_AUDIO",
    "MSG_COMMAND_AMF0",
    "MSG_COMMAND_AMF3",
    "MSG_DATA_AMF0",
    "MSG_SET_CHUNK_SIZE",
    "MSG_USER_CONTROL",
    "MSG_VIDEO",
    "OUT_CHUNK_SIZE",
    "HANDSHAKE_SIZE",
    "RTMP_VERSION",
    "ChunkReader",
    "Publisher",
    "PublishRequest",
    "RtmpMessage",
    "RtmpServer",
    "chunk_message",
]

log = logging.getLogger(__name__)

HANDSHAKE_SIZE = 1536
RTMP_VERSION = 3
# message types
MSG_SET_CHUNK_SIZE, MSG_ABORT, MSG_ACK, MSG_USER_CONTROL, MSG_WINDOW_ACK, MSG_PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
MSG_AUDIO, MSG_VIDEO, MSG_DATA_AMF3, MSG_COMMAND_AMF3, MSG_DATA_AMF0, MSG_COMMAND_AMF0 = 8, 9, 15, 17, 18, 20
MSG_AGGREGATE = 22
_COMMAND_CHUNK_STREAM = 3
OUT_CHUNK_SIZE = 4096  # what this side's chunks carry (told to the peer with Set Chunk Size)
_MAX_CHUNK_SIZE = 1 << 24
_MAX_CHUNK_STREAMS = 64
_STREAM_ID = 1  # the one message stream a connection gets


@dataclass(frozen=True)
class PublishRequest:
    """A publisher asking to publish: the application (``app`` of the URL), the stream key (the stream name,
    without any ``?query``), the peer's address and the protocol it came in by (``rtmp``, ``rtmps``; other
    ingests name theirs)."""

    app: str
    key: str
    peer: str
    protocol: str = "rtmp"


class Publisher(Protocol):
    """Where an accepted publish session's media goes. Called on the server's event loop: both methods must
    return at once (hand the tag to a queue or a thread)."""

    def media(self, tag: FlvTag) -> None: ...

    def ended(self, error: str | None) -> None:
        """The session is over: the publisher stopped (``None``) or the connection failed (why)."""


#: Decides a publish: a :class:`Publisher` to accept it, ``None`` to refuse the key, or raises
#: :class:`~kinoray.errors.IngestRefusedError` to refuse it for another reason (counted under its ``reason``).
Authorize = Callable[[PublishRequest], Awaitable[Publisher | None]]


@dataclass
class _ChunkStream:
    """What the previous chunk on one chunk stream id said (later headers may omit it)."""

    timestamp: int = 0
    delta: int = 0
    length: int = 0
    kind: int = 0
    stream_id: int = 0
    extended: bool = False
    payload: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class RtmpMessage:
    """One whole RTMP message: its type (``MSG_*``), timestamp (ms, 32 bits), message stream id and payload."""

    kind: int
    timestamp: int
    stream_id: int
    payload: bytes


class ChunkReader:
    """Reassembles RTMP messages from the chunks a peer sends (either side of a connection: the ingest's
    publishers, the simulcast pusher's servers): the four chunk header formats, extended timestamps, aborts and
    the chunk size the peer sets, bounded in message size and in chunk streams. ``read(count)`` returns exactly
    ``count`` bytes or raises (``EOFError``, ``TimeoutError``)."""

    def __init__(self, read: Callable[[int], Awaitable[bytes]], *, max_message_bytes: int) -> None:
        self.read, self.max_message_bytes = read, max_message_bytes
        self.chunk_size = 128
        self.streams: dict[int, _ChunkStream] = {}

    def set_chunk_size(self, payload: bytes) -> None:
        """A Set Chunk Size message from the peer."""
        if len(payload) < 4:
            raise IngestProtocolError("a short Set Chunk Size")
        size = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
        if not 1 <= size <= _MAX_CHUNK_SIZE:
            raise IngestProtocolError(f"chunk size {size}")
        self.chunk_size = size

    def abort(self, payload: bytes) -> None:
        """An Abort message: the named chunk stream's partial message is dropped."""
        if len(payload) >= 4 and (aborted := self.streams.get(struct.unpack(">I", payload[:4])[0])):
            aborted.payload.clear()

    async def next_message(self) -> RtmpMessage:
        """Read chunks until one message is complete."""
        while True:
            first = (await self.read(1))[0]
            fmt, csid = first >> 6, first & 0x3F
            if csid == 0:
                csid = 64 + (await self.read(1))[0]
            elif csid == 1:
                low, high = await self.read(2)
                csid = 64 + low + high * 256
            state = self.streams.get(csid)
            if state is None:
                if fmt != 0:
                    raise IngestProtocolError(f"chunk stream {csid} starts with a type {fmt} header")
                if len(self.streams) >= _MAX_CHUNK_STREAMS:
                    raise IngestProtocolError(f"more than {_MAX_CHUNK_STREAMS} chunk streams")
                state = self.streams[csid] = _ChunkStream()
            starting = not state.payload
            if fmt <= 2:
                header = await self.read((11, 7, 3)[fmt])
                stamp = int.from_bytes(header[0:3], "big")
                if fmt <= 1:
                    state.length, state.kind = int.from_bytes(header[3:6], "big"), header[6]
                if fmt == 0:
                    state.stream_id = struct.unpack("<I", header[7:11])[0]
                state.extended = stamp == 0xFFFFFF
                if state.extended:
                    stamp = struct.unpack(">I", await self.read(4))[0]
                if fmt == 0:
                    state.timestamp, state.delta = stamp, 0
                else:
                    state.delta = stamp
                    state.timestamp = (state.timestamp + stamp) & 0xFFFFFFFF
                if not starting:
                    raise IngestProtocolError(f"a new header on chunk stream {csid} cuts a message short")
            else:
                if state.extended:
                    await self.read(4)  # repeated on every chunk of a message with an extended timestamp
                if starting and state.length:
                    state.timestamp = (state.timestamp + state.delta) & 0xFFFFFFFF
            if state.length > self.max_message_bytes:
                raise IngestProtocolError(f"a {state.length}-byte message (at most {self.max_message_bytes})")
            take = min(self.chunk_size, state.length - len(state.payload))
            state.payload += await self.read(take) if take else b""
            if len(state.payload) >= state.length:
                payload = bytes(state.payload)
                state.payload.clear()
                return RtmpMessage(state.kind, state.timestamp, state.stream_id, payload)


def chunk_message(kind: int, payload: bytes, *, csid: int, stream_id: int = 0, timestamp: int = 0,
                  chunk_size: int = OUT_CHUNK_SIZE) -> bytes:
    """One message as chunks: a type 0 header, then type 3 headers every ``chunk_size`` bytes (a timestamp of
    2^24 - 1 ms or more goes in the extended field, repeated on each chunk as FFmpeg and the specification do).
    ``csid`` is 2..63 (a one-byte basic header)."""
    timestamp &= 0xFFFFFFFF
    extended = timestamp >= 0xFFFFFF
    stamp = (0xFFFFFF if extended else timestamp).to_bytes(3, "big")
    tail = struct.pack(">I", timestamp) if extended else b""
    out = bytearray([csid])
    out += stamp + len(payload).to_bytes(3, "big") + bytes([kind]) + struct.pack("<I", stream_id) + tail
    for start in range(0, max(len(payload), 1), chunk_size):
        if start:
            out.append(0xC0 | csid)
            out += tail
        out += payload[start:start + chunk_size]
    return bytes(out)


class _Refused(Exception):
    """A publish the server refused: the connection closes after telling the publisher."""


class _Session:
    def __init__(self, server: RtmpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 protocol: str = "rtmp") -> None:
        self.server, self.reader, self.writer, self.protocol = server, reader, writer, protocol
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.chunks = ChunkReader(self.read, max_message_bytes=server.max_message_bytes)
        self.app: str | None = None
        self.stream_created = False
        self.publisher: Publisher | None = None
        self.key: str | None = None

    # --- reading ---------------------------------------------------------------------------------------------

    async def read(self, count: int, timeout: float | None = None) -> bytes:
        try:
            return await asyncio.wait_for(self.reader.readexactly(count), timeout or self.server.idle_seconds)
        except asyncio.IncompleteReadError:
            raise EOFError from None

    async def handshake(self) -> None:
        c0c1 = await self.read(1 + HANDSHAKE_SIZE, self.server.handshake_seconds)
        if c0c1[0] != RTMP_VERSION:
            raise IngestProtocolError(f"RTMP version {c0c1[0]} (only 3 exists)")
        s1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0) + os.urandom(HANDSHAKE_SIZE - 8)
        s2 = c0c1[1:5] + struct.pack(">I", int(time.monotonic() * 1000) & 0xFFFFFFFF) + c0c1[9:]
        self.writer.write(bytes([RTMP_VERSION]) + s1 + s2)
        await self.writer.drain()
        await self.read(HANDSHAKE_SIZE, self.server.handshake_seconds)  # C2: an echo we do not need

    # --- writing ---------------------------------------------------------------------------------------------

    def send(self, kind: int, payload: bytes, *, csid: int = 2, stream_id: int = 0) -> None:
        self.writer.write(chunk_message(kind, payload, csid=csid, stream_id=stream_id))

    def command(self, *values: AmfValue, stream_id: int = 0) -> None:
        self.send(MSG_COMMAND_AMF0, encode(*values), csid=_COMMAND_CHUNK_STREAM, stream_id=stream_id)

    def status(self, level: str, code: str, description: str) -> None:
        self.command("onStatus", 0.0, None, {"level": level, "code": code, "description": description},
                     stream_id=_STREAM_ID)

    # --- the conversation ------------------------------------------------------------------------------------

    async def on_command(self, values: list[AmfValue]) -> None:
        if len(values) < 2 or not isinstance(values[0], str):
            raise IngestProtocolError("a command without a name and transaction id")
        name, transaction = values[0], values[1] if isinstance(values[1], float) else 0.0
        if name == "connect":
            settings = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
            app = settings.get("app")
            self.app = app.strip("/") if isinstance(app, str) else ""
            self.send(MSG_WINDOW_ACK, struct.pack(">I", 2_500_000))
            self.send(MSG_PEER_BANDWIDTH, struct.pack(">IB", 2_500_000, 2))
            self.send(MSG_SET_CHUNK_SIZE, struct.pack(">I", OUT_CHUNK_SIZE))
            self.command("_result", transaction, {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                         {"level": "status", "code": "NetConnection.Connect.Success",
                          "description": "Connection succeeded.", "objectEncoding": 0.0})
        elif name == "createStream":
            self.stream_created = True
            self.command("_result", transaction, None, float(_STREAM_ID))
        elif name == "publish":
            await self.on_publish(values)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            self.end(None)
        elif name in ("releaseStream", "FCPublish", "getStreamLength", "_checkbw"):
            pass  # answers nobody waits for
        else:
            log.debug("rtmp command ignored", extra={"peer": self.peer, "command": name[:64]})
        await self.writer.drain()

    async def on_publish(self, values: list[AmfValue]) -> None:
        name = values[3] if len(values) > 3 and isinstance(values[3], str) else ""
        key = name.split("?", 1)[0]
        if self.app is None or not self.stream_created:
            raise IngestProtocolError("publish before connect and createStream")
        if self.publisher is not None:
            raise IngestProtocolError("a second publish on one connection")
        if not key:
            self.refuse("no_key", "the stream name (stream key) is empty")
        try:
            publisher = await self.server.authorize(PublishRequest(app=self.app, key=key, peer=self.peer,
                                                                   protocol=self.protocol))
        except IngestRefusedError as refusal:
            self.refuse(refusal.reason, str(refusal))
        if publisher is None:
            self.refuse("bad_key", "no enabled live stream has this stream key")
        self.publisher, self.key = publisher, key
        self.server._publishing[key] = self
        self.send(MSG_USER_CONTROL, struct.pack(">HI", 0, _STREAM_ID))  # StreamBegin
        self.status("status", "NetStream.Publish.Start", "Publishing.")
        log.info("rtmp publish started", extra={"peer": self.peer, "app": self.app, "protocol": self.protocol})

    def refuse(self, reason: str, description: str) -> None:
        LIVE_INGEST_REFUSED.labels(reason=reason).inc()
        self.status("error", "NetStream.Publish.BadName", description)
        log.warning("rtmp publish refused", extra={"peer": self.peer, "app": self.app, "reason": reason})
        raise _Refused(reason)

    def on_data(self, values: list[AmfValue]) -> None:
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if self.publisher is not None and len(values) >= 2 and values[0] == "onMetaData":
            self.publisher.media(FlvTag(SCRIPT, 0, encode("onMetaData", values[1])))

    def on_aggregate(self, timestamp: int, payload: bytes) -> None:
        """An aggregate message: FLV tags back to back, their timestamps relative to the first one's."""
        base = None
        try:
            for tag in read_tags(io.BytesIO(payload)):
                base = tag.timestamp if base is None else base
                if tag.kind in (AUDIO, VIDEO) and self.publisher is not None:
                    self.publisher.media(FlvTag(tag.kind, (timestamp + tag.timestamp - base) & 0xFFFFFFFF, tag.body))
        except InvalidMediaError:
            raise IngestProtocolError("an aggregate message's tag runs past its end") from None

    async def run(self) -> None:
        await self.handshake()
        while True:
            message = await self.chunks.next_message()
            kind, payload = message.kind, message.payload
            if kind == MSG_SET_CHUNK_SIZE:
                self.chunks.set_chunk_size(payload)
            elif kind == MSG_ABORT:
                self.chunks.abort(payload)
            elif kind in (MSG_AUDIO, MSG_VIDEO):
                if self.publisher is not None and payload:
                    self.publisher.media(FlvTag(AUDIO if kind == MSG_AUDIO else VIDEO, message.timestamp, payload))
            elif kind in (MSG_COMMAND_AMF0, MSG_COMMAND_AMF3):
                await self.on_command(decode_all(payload[1:] if kind == MSG_COMMAND_AMF3 else payload))
                if self.key is not None and self.publisher is None:
                    return  # unpublished
            elif kind in (MSG_DATA_AMF0, MSG_DATA_AMF3):
                self.on_data(decode_all(payload[1:] if kind == MSG_DATA_AMF3 else payload))
            elif kind == MSG_AGGREGATE:
                self.on_aggregate(message.timestamp, payload)
            # acknowledgements, window sizes, peer bandwidth and user control need no answer from a server
            # that only receives

    def end(self, error: str | None) -> None:
        if self.key is not None and self.server._publishing.get(self.key) is self:
            del self.server._publishing[self.key]
        publisher, self.publisher = self.publisher, None
        if publisher is not None:
            publisher.ended(error)
            log.info("rtmp publish ended", extra={"peer": self.peer, "error": error})


class RtmpServer:
    """Listens for publishers on ``host:port`` (port 0: any free port; :attr:`port` says which after
    :meth:`start`), and with ``tls`` for RTMPS publishers on ``host:tls_port`` as well (:attr:`tls_port` after
    :meth:`start`). ``authorize`` decides each publish; see the module docstring for what is bounded."""

    protocol = "rtmp"  # an ingest protocol of the live runtime (kinoray.live.ingest.IngestServer)

    def __init__(self, authorize: Authorize, *, host: str = "0.0.0.0", port: int = 1935,
                 tls: ssl.SSLContext | None = None, tls_port: int = 1936,
                 handshake_seconds: float = 10.0, idle_seconds: float = 30.0,
                 max_message_bytes: int = 16 << 20, max_connections: int = 256) -> None:
        self.authorize, self.host, self.port = authorize, host, port
        self.tls, self.tls_port = tls, tls_port
        self.handshake_seconds, self.idle_seconds = handshake_seconds, idle_seconds
        self.max_message_bytes, self.max_connections = max_message_bytes, max_connections
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._publishing: dict[str, _Session] = {}

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("rtmp ingest listening", extra={"host": self.host, "port": self.port})
        if self.tls is not None:
            async def serve_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._serve(reader, writer, protocol="rtmps")

            try:
                self._tls_server = await asyncio.start_server(serve_tls, self.host, self.tls_port, ssl=self.tls,
                                                              ssl_handshake_timeout=self.handshake_seconds)
            except OSError:
                await self.close()
                raise
            self.tls_port = self._tls_server.sockets[0].getsockname()[1]
            log.info("rtmps ingest listening", extra={"host": self.host, "port": self.tls_port})
        return self.port

    def drop(self, key: str) -> bool:
        """Disconnect the publisher of ``key`` (its stream was disabled, completed or ran out of time): its
        :class:`Publisher` sees ``ended``. ``False`` if none is publishing with that key. Call on the server's
        event loop."""
        session = self._publishing.get(key)
        if session is None:
            return False
        log.info("rtmp publisher dropped", extra={"peer": session.peer})
        session.writer.close()
        return True

    @property
    def publishing(self) -> int:
        """How many publishers are sending now."""
        return len(self._publishing)

    async def close(self) -> None:
        """Stop listening and end every session (their publishers see ``ended``)."""
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
                await server.wait_closed()
        for task in list(self._sessions):
            task.cancel()
        for task in list(self._sessions):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     protocol: str = "rtmp") -> None:
        task = asyncio.current_task()
        assert task is not None
        session = _Session(self, reader, writer, protocol)
        if len(self._sessions) >= self.max_connections:
            LIVE_INGEST_REFUSED.labels(reason="too_many_connections").inc()
            writer.close()
            return
        self._sessions.add(task)
        error: str | None = None
        try:
            await session.run()
        except _Refused:
            pass
        except (EOFError, ConnectionError):
            error = None if session.key is None else "the publisher's connection closed"
        except TimeoutError:
            error = f"nothing received for {self.idle_seconds:g} s"
            if session.key is None:
                LIVE_INGEST_REFUSED.labels(reason="timeout").inc()
        except IngestProtocolError as problem:
            error = str(problem)
            if session.key is None:
                LIVE_INGEST_REFUSED.labels(reason="protocol").inc()
            log.warning("rtmp session ended: malformed stream", extra={"peer": session.peer, "error": error})
        except asyncio.CancelledError:
            error = "the ingest server stopped"
            raise
        finally:
            session.end(error)
            self._sessions.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 2)
