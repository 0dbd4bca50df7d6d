"""Simulcast: a live stream's source pushed on to other platforms' RTMP(S) ingests, unchanged.

A :class:`SimulcastPusher` is an RTMP *client* (publisher) for one target, on the ingest's event loop: it takes
the publisher's FLV tags as they arrive (:meth:`SimulcastPusher.media`, a :class:`~kinoray.live.rtmp.Publisher`)
and sends them as RTMP messages — the tags' bodies are the publisher's own message payloads, so this is a
remux without any decoding or encoding. The chunk layer is the ingest server's (:class:`~kinoray.live.rtmp.ChunkReader`,
:func:`~kinoray.live.rtmp.chunk_message`); the conversation is a publisher's (handshake, ``connect``,
``releaseStream``/``FCPublish``, ``createStream``, ``publish``, ``@setDataFrame``, media, ``FCUnpublish``/
``deleteStream``), as FFmpeg and OBS speak it. ``rtmps://`` is the same over TLS (the system's trust store).

**Each target on its own, never slowing the stream.** :meth:`~SimulcastPusher.media` never blocks nor awaits:
it appends to the target's queue, bounded by ``max_buffer_bytes``. A target that cannot keep up (a slow link,
a stalled server) overflows its queue: the connection is dropped, the queue emptied, and the pusher connects
again — memory stays bounded and nothing else notices. Sending waits for the socket's drain (so the transport's
own buffer stays small) at most ``write_timeout`` seconds; what the kernel holds beyond that is its send buffer
(``socket_buffer``, else the OS's own sizing).

**Statuses** (Mux's): ``starting`` when the pusher first connects, ``broadcasting`` once the target accepted the
publish, ``errored`` when a connection fails or drops (``error_severity`` ``normal``: it is retried with
exponential backoff, ``retry_seconds`` doubling up to ``max_retry_seconds``, for as long as the stream runs;
``fatal``: a URL it cannot use, not retried), ``idle`` when the source ends. They are reported through
``on_status`` (called on the loop; the caller persists them — this module has no database).

**Joining mid-stream.** The codec configuration (metadata, AVC/HEVC and AAC sequence headers) is kept as it
passes; every connection sends it first, then the stream from the next video keyframe on, so a target that
connects late or reconnects gets a decodable stream. Timestamps are the publisher's, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from kinoray.errors import IngestProtocolError, SimulcastError
from kinoray.live.amf import AmfValue, decode_all, encode
from kinoray.live.rtmp import (
    HANDSHAKE_SIZE,
    MSG_AUDIO,
    MSG_COMMAND_AMF0,
    MSG_COMMAND_AMF3,
    MSG_DATA_AMF0,
    MSG_SET_CHUNK_SIZE,
    MSG_USER_CONTROL,
    MSG_VIDEO,
    OUT_CHUNK_SIZE,
    RTMP_VERSION,
    ChunkReader,
    chunk_message,
)
from kinoray.media.flv import AUDIO, SCRIPT, VIDEO, FlvTag

__all__ = ["SimulcastDestination", "SimulcastPusher", "SimulcastStatus", "StatusCallback", "parse_destination"]

log = logging.getLogger(__name__)

SimulcastStatus = Literal["idle", "starting", "broadcasting", "errored"]
#: ``on_status(target_id, status, error_severity, error)``: ``error_severity`` (``normal`` / ``fatal``) and
#: ``error`` (why) only with ``errored``.
StatusCallback = Callable[[str, SimulcastStatus, str | None, str | None], None]

_CONTROL_CSID, _COMMAND_CSID, _AUDIO_CSID, _VIDEO_CSID, _DATA_CSID = 2, 3, 4, 6, 5
_PING_REQUEST, _PING_RESPONSE = 6, 7
_MAX_SERVER_MESSAGE = 1 << 20  # a server's answers are small
_BATCH_BYTES = 256 << 10  # tags written before waiting for the socket to drain


@dataclass(frozen=True)
class SimulcastDestination:
    """Where one target's push goes: ``host:port`` (TLS for ``rtmps``), the RTMP application (``app``, with
    any query of the URL), the ``tcUrl`` and the stream name (the target's stream key)."""

    target_id: str
    host: str
    port: int
    tls: bool
    app: str
    tc_url: str
    stream_name: str

    def __repr__(self) -> str:  # the stream key is a secret of the target's platform: never in logs
        return f"SimulcastDestination({self.target_id!r}, {self.host}:{self.port}, app={self.app!r})"


def parse_destination(target_id: str, url: str, stream_key: str | None) -> SimulcastDestination:
    """The destination of a simulcast target (Mux's ``url`` + ``stream_key``): the URL's path is the
    application; with no stream key, its last path segment is the stream name instead (FFmpeg's reading of
    ``rtmp://host/app/name``).

    Raises:
        SimulcastError: (fatal) a URL that is not ``rtmp://`` / ``rtmps://`` with a host, or no stream name.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise SimulcastError(f"unusable simulcast URL: {error}", fatal=True) from None
    if parts.scheme not in ("rtmp", "rtmps") or not parts.hostname:
        raise SimulcastError("a simulcast URL must be rtmp:// or rtmps:// with a host", fatal=True)
    tls = parts.scheme == "rtmps"
    path = parts.path.strip("/")
    name = stream_key or ""
    if not name:
        path, _, name = path.rpartition("/")
    if not name:
        raise SimulcastError("no stream name: give a stream_key or end the URL with one", fatal=True)
    app = path + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    default = 443 if tls else 1935
    tc_url = f"{parts.scheme}://{netloc}{f':{port}' if port else ''}/{app}"
    return SimulcastDestination(target_id, host, port or default, tls, app, tc_url, name)


class _Connection:
    """One RTMP publish connection to a target: opened by :meth:`open`, fed by :meth:`send_tags`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.chunks = ChunkReader(self._read, max_message_bytes=_MAX_SERVER_MESSAGE)
        self.stream_id = 0
        self.transaction = 0.0
        self.failure: SimulcastError | None = None  # set by the listener when the server ends the publish
        self.lost = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self.bytes_sent = 0

    async def _read(self, count: int) -> bytes:
        try:
            return await self.reader.readexactly(count)
        except asyncio.IncompleteReadError:
            raise EOFError from None

    @classmethod
    async def open(cls, destination: SimulcastDestination, timeout: float,
                   socket_buffer: int | None = None) -> _Connection:
        """Connect, shake hands, ``connect`` and ``publish``; the connection once the target said
        ``NetStream.Publish.Start``. Every step within ``timeout`` seconds. ``socket_buffer``: the socket's
        send buffer (``None``: the OS's)."""
        context = ssl.create_default_context() if destination.tls else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(destination.host, destination.port, ssl=context,
                                    server_hostname=destination.host if context else None), timeout)
        raw = writer.get_extra_info("socket")
        if socket_buffer is not None and raw is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, socket_buffer)
        connection = cls(reader, writer, timeout)
        try:
            await asyncio.wait_for(connection._publish(destination), timeout)
        except BaseException:
            connection.close()
            raise
        return connection

    async def _publish(self, destination: SimulcastDestination) -> None:
        # handshake: C0 C1 → S0 S1 S2 → C2 (S1 echoed)
        c1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0) + os.urandom(HANDSHAKE_SIZE - 8)
        self.writer.write(bytes([RTMP_VERSION]) + c1)
        await self.writer.drain()
        answer = await self._read(1 + 2 * HANDSHAKE_SIZE)
        if answer[0] != RTMP_VERSION:
            raise SimulcastError(f"the target speaks RTMP version {answer[0]}, not 3")
        self.writer.write(answer[1:1 + HANDSHAKE_SIZE])
        self._write(MSG_SET_CHUNK_SIZE, struct.pack(">I", OUT_CHUNK_SIZE), csid=_CONTROL_CSID)
        await self._call("connect", {"app": destination.app, "type": "nonprivate",
                                     "flashVer": "FMLE/3.0 (compatible; kinoray)", "tcUrl": destination.tc_url})
        self._command("releaseStream", self._next(), None, destination.stream_name)
        self._command("FCPublish", self._next(), None, destination.stream_name)
        result = await self._call("createStream", None)
        stream_id = result[3] if len(result) > 3 else None
        if not isinstance(stream_id, float) or not 0 < stream_id < 1 << 31:
            raise SimulcastError(f"createStream answered a stream id of {stream_id!r}")
        self.stream_id = int(stream_id)
        self._command("publish", self._next(), None, destination.stream_name, "live", stream_id=self.stream_id)
        await self.writer.drain()
        while True:
            values = await self._command_message()
            if values[0] == "onStatus":
                code = _status_code(values)
                if code == "NetStream.Publish.Start":
                    break
                if code.startswith("NetStream.Publish.") or code.startswith("NetConnection.") \
                        or _status_level(values) == "error":
                    raise SimulcastError(f"the target refused the publish: {code}")
            elif values[0] == "_error":
                raise SimulcastError(f"the target refused the publish: {_status_code(values) or 'error'}")
        self._listener = asyncio.get_running_loop().create_task(self._listen(), name="simulcast-listen")

    def _next(self) -> float:
        self.transaction += 1
        return self.transaction

    def _write(self, kind: int, payload: bytes, *, csid: int, stream_id: int = 0, timestamp: int = 0) -> None:
        data = chunk_message(kind, payload, csid=csid, stream_id=stream_id, timestamp=timestamp)
        self.bytes_sent += len(data)
        self.writer.write(data)

    def _command(self, *values: AmfValue, stream_id: int = 0) -> None:
        self._write(MSG_COMMAND_AMF0, encode(*values), csid=_COMMAND_CSID, stream_id=stream_id)

    async def _call(self, name: str, *arguments: AmfValue) -> list[AmfValue]:
        """Send a command and wait for its ``_result`` (``_error``: refused)."""
        transaction = self._next()
        self._command(name, transaction, *arguments)
        await self.writer.drain()
        while True:
            values = await self._command_message()
            if values[0] in ("_result", "_error") and len(values) > 1 and values[1] == transaction:
                if values[0] == "_error":
                    raise SimulcastError(f"the target refused {name}: {_status_code(values) or 'error'}")
                return values

    async def _command_message(self) -> list[AmfValue]:
        """The next command the server sends, answering control messages on the way."""
        while True:
            message = await self.chunks.next_message()
            if self._control(message.kind, message.payload):
                continue
            if message.kind in (MSG_COMMAND_AMF0, MSG_COMMAND_AMF3):
                values = decode_all(message.payload[1:] if message.kind == MSG_COMMAND_AMF3 else message.payload)
                if values and isinstance(values[0], str):
                    return values

    def _control(self, kind: int, payload: bytes) -> bool:
        """Handle a protocol control message; whether it was one."""
        if kind == MSG_SET_CHUNK_SIZE:
            self.chunks.set_chunk_size(payload)
        elif kind == 2:  # Abort
            self.chunks.abort(payload)
        elif kind == MSG_USER_CONTROL:
            if len(payload) >= 6 and struct.unpack(">H", payload[:2])[0] == _PING_REQUEST:
                self._write(MSG_USER_CONTROL, struct.pack(">H", _PING_RESPONSE) + payload[2:6], csid=_CONTROL_CSID)
        elif kind in (3, 5, 6):  # acknowledgement, window acknowledgement size, peer bandwidth: nothing to say
            pass
        else:
            return False
        return True

    async def _listen(self) -> None:
        """While publishing: answer pings, and notice the server ending the publish or the connection."""
        try:
            while True:
                values = await self._command_message()
                if values[0] == "onStatus" and _status_level(values) == "error":
                    raise SimulcastError(f"the target ended the publish: {_status_code(values)}")
        except SimulcastError as error:
            self.failure = error
        except (EOFError, ConnectionError, OSError, IngestProtocolError) as error:
            self.failure = SimulcastError(f"the target closed the connection ({type(error).__name__}: {error})"
                                          if str(error) else "the target closed the connection")
        finally:
            self.lost.set()

    def send_tags(self, tags: list[FlvTag]) -> None:
        for tag in tags:
            if tag.kind == SCRIPT:
                self._write(MSG_DATA_AMF0, encode("@setDataFrame") + tag.body, csid=_DATA_CSID,
                            stream_id=self.stream_id, timestamp=tag.timestamp)
            else:
                self._write(MSG_AUDIO if tag.kind == AUDIO else MSG_VIDEO, tag.body,
                            csid=_AUDIO_CSID if tag.kind == AUDIO else _VIDEO_CSID,
                            stream_id=self.stream_id, timestamp=tag.timestamp)

    async def drain(self, timeout: float) -> None:
        await asyncio.wait_for(self.writer.drain(), timeout)

    async def unpublish(self, name: str, timeout: float) -> None:
        """End the publish as a publisher does, then let everything sent reach the target before the connection
        ends: half-close (FIN after what is buffered) and wait for the target to close its side (the listener
        keeps reading meanwhile — closing a socket with unread data would reset the connection and cost the
        target the stream's tail). Best effort within ``timeout``: the connection is closed next anyway."""
        with contextlib.suppress(Exception):
            self._command("FCUnpublish", self._next(), None, name)
            self._command("deleteStream", self._next(), None, float(self.stream_id))
            if self.writer.can_write_eof():
                self.writer.write_eof()
                await asyncio.wait_for(self.lost.wait(), timeout)
            else:  # TLS: no half-close; wait until the transport has handed everything to the kernel
                deadline = time.monotonic() + timeout
                while self.writer.transport.get_write_buffer_size() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()


def _info(values: list[AmfValue]) -> dict[str, AmfValue]:
    return next((value for value in values[2:] if isinstance(value, dict)), {})


def _status_code(values: list[AmfValue]) -> str:
    code = _info(values).get("code")
    return code if isinstance(code, str) else ""


def _status_level(values: list[AmfValue]) -> str:
    level = _info(values).get("level")
    return level if isinstance(level, str) else ""


class SimulcastPusher:
    """Pushes one publisher's stream to one simulcast target (see the module docstring). Made on the ingest's
    event loop when a publish starts; :meth:`ended` when the source ends; :meth:`wait` until the pusher has
    closed its connection and reported ``idle``."""

    def __init__(self, target_id: str, url: str, stream_key: str | None, on_status: StatusCallback, *,
                 max_buffer_bytes: int = 8 << 20, connect_timeout: float = 10.0, write_timeout: float = 10.0,
                 retry_seconds: float = 1.0, max_retry_seconds: float = 30.0,
                 socket_buffer: int | None = None) -> None:
        self.target_id, self.url, self.stream_key, self.on_status = target_id, url, stream_key, on_status
        self.max_buffer_bytes, self.connect_timeout, self.write_timeout = max_buffer_bytes, connect_timeout, write_timeout
        self.retry_seconds, self.max_retry_seconds = retry_seconds, max_retry_seconds
        self.socket_buffer = socket_buffer
        self.headers: dict[int, FlvTag] = {}  # tag kind -> the latest metadata / codec configuration
        self.queue: deque[FlvTag] = deque()
        self.queued_bytes = 0
        self.accepting = False  # a connection is publishing: tags go to the queue
        self.waiting_for_keyframe = True
        self.overflowed = False
        self.status: SimulcastStatus = "idle"
        self.connections = self.failures = self.overflows = 0
        self.bytes_sent = 0
        self._stopping = False
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="simulcast-push")

    # --- Publisher (called on the loop: never blocks) ----------------------------------------------------

    def media(self, tag: FlvTag) -> None:
        if tag.is_header:
            self.headers[tag.kind] = tag  # the latest metadata and codec configurations
        if not self.accepting:
            return
        if self.waiting_for_keyframe:
            # a connection starts with the configuration, then a video keyframe (audio-only: any audio frame)
            if tag.is_header:
                return
            starts = tag.is_keyframe if VIDEO in self.headers else tag.kind == AUDIO
            if not starts:
                return
            self.waiting_for_keyframe = False
            for header in self._ordered_headers():
                self._enqueue(FlvTag(header.kind, tag.timestamp, header.body))
        elif tag.kind == SCRIPT:
            return  # metadata again mid-stream: targets keep what they got first
        self._enqueue(tag)

    def ended(self, error: str | None = None) -> None:
        self._stopping = True
        self._wake.set()

    # --- the queue -----------------------------------------------------------------------------------------

    def _ordered_headers(self) -> list[FlvTag]:
        return sorted(self.headers.values(), key=lambda tag: (tag.kind != SCRIPT, tag.kind != VIDEO))

    def _enqueue(self, tag: FlvTag) -> None:
        self.queue.append(tag)
        self.queued_bytes += len(tag.body) + 16
        if self.queued_bytes > self.max_buffer_bytes:
            self.overflowed = True  # the connection is dropped; memory goes back now
            self._close_queue()
        self._wake.set()

    def _close_queue(self) -> None:
        self.accepting = False
        self.queue.clear()
        self.queued_bytes = 0

    def _take(self) -> list[FlvTag]:
        batch: list[FlvTag] = []
        size = 0
        while self.queue and size < _BATCH_BYTES:
            tag = self.queue.popleft()
            batch.append(tag)
            size += len(tag.body) + 16
        self.queued_bytes -= size
        return batch

    # --- the connection loop --------------------------------------------------------------------------------

    def _report(self, status: SimulcastStatus, severity: str | None = None, error: str | None = None) -> None:
        if status == self.status:
            return  # e.g. still failing: one report per outage
        self.status = status
        log.info("simulcast target status", extra={"target": self.target_id, "status": status, "error": error})
        try:
            self.on_status(self.target_id, status, severity, error)
        except Exception as problem:  # noqa: BLE001 - a reporting failure must not end the push
            log.error("simulcast status not reported", extra={"target": self.target_id, "error": str(problem)})

    async def _run(self) -> None:
        delay = self.retry_seconds
        try:
            destination = parse_destination(self.target_id, self.url, self.stream_key)
        except SimulcastError as error:
            self._report("starting")
            self._report("errored", "fatal", str(error))
            await self._sleep(None)
            self._report("idle")
            return
        self._report("starting")
        while not self._stopping:
            started = time.monotonic()
            connection: _Connection | None = None
            try:
                connection = await _Connection.open(destination, self.connect_timeout, self.socket_buffer)
                self.connections += 1
                self.overflowed, self.waiting_for_keyframe, self.accepting = False, True, True
                self._report("broadcasting")
                await self._stream(connection)
                if self._stopping:
                    await connection.unpublish(destination.stream_name, self.write_timeout)
            except SimulcastError as error:
                self._failed(str(error))
            except (OSError, EOFError, TimeoutError, IngestProtocolError, ssl.SSLError) as error:
                self._failed(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
            except Exception as error:  # noqa: BLE001 - whatever it was, this target only: retried like the rest
                log.exception("simulcast push failed unexpectedly", extra={"target": self.target_id})
                self._failed(f"{type(error).__name__}: {error}")
            finally:
                self._close_queue()
                if connection is not None:
                    self.bytes_sent += connection.bytes_sent
                    connection.close()
            if self._stopping:
                break
            if time.monotonic() - started > self.max_retry_seconds:
                delay = self.retry_seconds  # it ran a while: the next outage starts the backoff again
            await self._sleep(delay * random.uniform(0.9, 1.1))
            delay = min(delay * 2, self.max_retry_seconds)
        self._report("idle")

    def _failed(self, reason: str) -> None:
        self.failures += 1
        log.warning("simulcast push failed", extra={"target": self.target_id, "error": reason[:300]})
        self._report("errored", "normal", reason[:300])

    async def _sleep(self, seconds: float | None) -> None:
        """Until ``seconds`` pass (``None``: forever) or the source ends."""
        self._wake.clear()
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), seconds)
            except TimeoutError:
                return
            self._wake.clear()

    async def _stream(self, connection: _Connection) -> None:
        """Send what the queue gets until the source ends; raises when the connection fails or overflows."""
        lost = asyncio.ensure_future(connection.lost.wait())
        try:
            while True:
                if connection.failure is not None:
                    raise connection.failure
                if self.overflowed:
                    self.overflows += 1
                    raise SimulcastError(f"the target fell more than {self.max_buffer_bytes} bytes behind: "
                                         "dropped, connecting again")
                if self.queue:
                    connection.send_tags(self._take())
                    try:
                        await connection.drain(self.write_timeout)
                    except TimeoutError:
                        raise SimulcastError(f"the target took nothing for {self.write_timeout:g} s") from None
                    continue
                if self._stopping:
                    return
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({waker, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
        finally:
            lost.cancel()

    async def wait(self) -> None:
        """Until the pusher is done (after :meth:`ended`)."""
        await asyncio.shield(self._task)

    @property
    def done(self) -> bool:
        return self._task.done()
