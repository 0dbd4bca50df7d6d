"""Chunk transcode: decode a chunk once, scale it to every rendition, encode each, store the packets."""

from __future__ import annotations

import logging
import queue
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import av

from kinoray.encoders.base import EncoderBackend, EncoderSession, EncoderSettings
from kinoray.encoders.nvenc import nvdec_hwaccel
from kinoray.errors import EncoderUnavailableError, FrameMismatchError, TranscodeError
from kinoray.logs import native_output_to_logging
from kinoray.media.frames import ChunkDecodeStats, RenditionScaler, Scaler, decode_chunk_frames
from kinoray.media.ladder import Rendition
from kinoray.media.packets import PacketStoreWriter, StreamParameters
from kinoray.media.plan import Chunk, ChunkPlan
from kinoray.media.probe import VideoStreamInfo
from kinoray.media.watermark import WatermarkScaler

__all__ = ["ChunkResult", "EncodeOptions", "RenditionChunk", "chunk_store_path", "transcode_chunk"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeOptions:
    """Encoder knobs shared by every chunk of an asset (so every chunk is encoded identically)."""

    codec: str = "h264"
    preset: str | None = None
    quality: int | None = None
    threads: int = 1  # encoder threads per rendition; 1 is the most efficient per core
    decode_threads: int = 1
    decoder: str = "auto"  # auto (NVDEC when a CUDA device is usable, else CPU) | cpu | nvdec
    bframes: int = 3
    # Each rendition's encoder runs on its own thread (frames handed over in order, so the output is the
    # same as encoding them one after another): a chunk can use more than one core when cores are idle —
    # the last chunk of a job, or a short video — without multi-threading the encoders themselves.
    parallel_renditions: bool = True
    watermark: bool = False  # burn the test-asset mark into every rendition (kinoray.media.watermark)

    def settings_for(self, plan: ChunkPlan, rendition: Rendition) -> EncoderSettings:
        return EncoderSettings(
            codec=self.codec,
            width=rendition.width,
            height=rendition.height,
            frame_rate=plan.frame_rate,
            time_base=plan.time_base,
            gop_frames=plan.segment_frames,
            max_bitrate=rendition.max_bitrate,
            buffer_size=rendition.buffer_size,
            preset=self.preset,
            quality=self.quality,
            threads=self.threads,
            bframes=self.bframes,
        )


@dataclass(frozen=True)
class RenditionChunk:
    rendition: str
    store: str  # packet store path (without suffix)
    packets: int
    bytes: int
    keyframe_frames: tuple[int, ...]  # output frame indices of the keyframes written


@dataclass(frozen=True)
class ChunkResult:
    chunk_index: int
    start_frame: int
    frame_count: int
    renditions: tuple[RenditionChunk, ...]
    encoder: str
    codec: str
    decoder: str  # "cpu" or the hwaccel device type that decoded ("cuda")
    scaler: str  # "swscale" or "torch-<device>"
    decoded_frames: int
    preroll_frames: int
    repeated_frames: int
    dropped_frames: int
    concealed_frames: int
    wall_seconds: float
    cpu_seconds: float
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chunk_store_path(work_dir: Path, rendition: str, chunk_index: int) -> Path:
    """Where a chunk's packets for one rendition live (deterministic, so a retry overwrites in place)."""
    return work_dir / "chunks" / rendition / f"chunk_{chunk_index:05d}"


def transcode_chunk(
    plan: ChunkPlan,
    chunk: Chunk,
    ladder: tuple[Rendition, ...],
    encoder: EncoderBackend,
    *,
    work_dir: Path,
    options: EncodeOptions | None = None,
    hwaccel: Any | None = None,
    scaler: Callable[[VideoStreamInfo, tuple[Rendition, ...]], Scaler] = RenditionScaler,
) -> ChunkResult:
    """Encode ``chunk`` for every rendition of ``ladder`` with ``encoder``; outputs go under ``work_dir``.

    Every segment start gets a forced IDR and the encoder is configured with no other keyframes, so all
    renditions switch at identical times. The result is checked before it is committed: exactly
    ``chunk.frame_count`` packets per rendition and keyframes exactly on the segment grid.

    ``scaler`` builds the frame scaler (swscale by default; the GPU workers pass a torch one). ``hwaccel``
    overrides ``options.decoder`` with an already-probed hardware decoder.

    Raises:
        InvalidMediaError: the source range cannot be decoded.
        EncoderError: the encoder failed.
        FrameMismatchError: the encoded output does not match the plan (nothing is committed).
    """
    options = options or EncodeOptions()
    if hwaccel is None:
        hwaccel = resolve_decoder(options.decoder)
    with native_output_to_logging():
        return _transcode_chunk(plan, chunk, ladder, encoder, work_dir, options, hwaccel, scaler)


def resolve_decoder(decoder: str) -> Any | None:
    """The hwaccel for ``decoder``: None means CPU. ``nvdec`` must be usable; ``auto`` uses it when it is."""
    if decoder == "cpu":
        return None
    if decoder not in ("auto", "nvdec"):
        raise ValueError(f"decoder must be auto, cpu or nvdec, not {decoder!r}")
    accel = nvdec_hwaccel()
    if accel is None and decoder == "nvdec":
        raise EncoderUnavailableError("NVDEC decode requested but no CUDA device is usable here")
    return accel


def _transcode_chunk(plan: ChunkPlan, chunk: Chunk, ladder: tuple[Rendition, ...], encoder: EncoderBackend,
                     work_dir: Path, options: EncodeOptions, hwaccel: Any | None,
                     make_scaler: Callable[[VideoStreamInfo, tuple[Rendition, ...]], Scaler]) -> ChunkResult:
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    stats = ChunkDecodeStats()
    scaler = make_scaler(plan.video, ladder)
    if options.watermark:
        scaler = WatermarkScaler(scaler)
    sessions: list[EncoderSession] = []
    writers: list[PacketStoreWriter] = []
    ticks = plan.frame_ticks
    lanes: list[_RenditionLane] = []
    try:
        for rendition in ladder:
            sessions.append(encoder.open(options.settings_for(plan, rendition)))
        for rendition, session in zip(ladder, sessions, strict=True):
            params = StreamParameters(codec=session.codec_name, time_base=plan.time_base,
                                      extradata=session.extradata, width=rendition.width, height=rendition.height)
            writer = PacketStoreWriter(chunk_store_path(work_dir, rendition.name, chunk.index), params)
            writers.append(writer)
            lanes.append(_RenditionLane(rendition.name, session, writer, ticks, threaded=options.parallel_renditions
                                        and len(ladder) > 1))
        for frame_number, frame in decode_chunk_frames(plan, chunk, stats, threads=options.decode_threads,
                                                       hwaccel=hwaccel):
            force_idr = plan.is_segment_start(frame_number)
            for lane, scaled in zip(lanes, scaler.scale(frame), strict=True):
                lane.encode(scaled, frame_number * ticks, force_idr)
        for lane in lanes:
            lane.finish()
        for lane, session in zip(lanes, sessions, strict=True):
            lane.join()
            # Parameter sets can appear only after the first encode (some encoders); store the final ones.
            lane.writer.params = replace(lane.writer.params, extradata=session.extradata)
        _verify(plan, chunk, ladder, writers, [lane.keyframes for lane in lanes])
        for writer in writers:
            writer.commit()
    except BaseException:
        for lane in lanes:
            lane.abandon()
        for writer in writers:
            writer.discard()
        raise
    finally:
        for session in sessions:
            session.close()
    outputs = tuple(
        RenditionChunk(
            rendition=rendition.name,
            store=str(writer.base),
            packets=len(writer.rows),
            bytes=writer.bytes_written,
            keyframe_frames=tuple(sorted(lane.keyframes)),
        )
        for rendition, writer, lane in zip(ladder, writers, lanes, strict=True)
    )
    result = ChunkResult(
        chunk_index=chunk.index,
        start_frame=chunk.start_frame,
        frame_count=chunk.frame_count,
        renditions=outputs,
        encoder=encoder.name,
        codec=options.codec,
        decoder=stats.hwaccel or "cpu",
        scaler=scaler.name,
        decoded_frames=stats.decoded,
        preroll_frames=stats.preroll,
        repeated_frames=stats.repeated,
        dropped_frames=stats.dropped,
        concealed_frames=stats.concealed,
        wall_seconds=time.perf_counter() - started,
        cpu_seconds=_cpu_seconds() - cpu_started,
        notes=tuple(stats.notes),
    )
    log.debug("chunk encoded", extra={"chunk": chunk.index, "frames": chunk.frame_count,
                                      "seconds": round(result.wall_seconds, 3), "encoder": encoder.name})
    return result


def _verify(plan: ChunkPlan, chunk: Chunk, ladder: tuple[Rendition, ...], writers: list[PacketStoreWriter],
            keyframes: list[list[int]]) -> None:
    expected_keys = [f for f in range(chunk.start_frame, chunk.end_frame) if plan.is_segment_start(f)]
    for rendition, writer, found in zip(ladder, writers, keyframes, strict=True):
        if len(writer.rows) != chunk.frame_count:
            raise FrameMismatchError(
                f"chunk {chunk.index} {rendition.name}: {len(writer.rows)} packets for {chunk.frame_count} frames"
            )
        if sorted(found) != expected_keys:
            raise TranscodeError(
                f"chunk {chunk.index} {rendition.name}: keyframes at frames {sorted(found)[:8]}, "
                f"expected exactly the segment starts {expected_keys[:8]}"
            )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _RenditionLane:
    """One rendition's encoder session fed in frame order, on a thread of its own when ``threaded``.

    The encoders release the GIL while they work (x264, x265, SVT-AV1 and NVENC through PyAV), so the lanes of
    a chunk run in parallel with each other and with the decoder/scaler on the calling thread. The queue is
    short, so at most ``_LANE_DEPTH`` scaled frames per rendition wait in memory.
    """

    _FINISH = object()
    _STOP = object()

    def __init__(self, name: str, session: EncoderSession, writer: PacketStoreWriter, ticks: int, *,
                 threaded: bool) -> None:
        self.session = session
        self.writer = writer
        self.ticks = ticks
        self.keyframes: list[int] = []
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue: queue.Queue[Any] = queue.Queue(maxsize=_LANE_DEPTH)
            self._thread = threading.Thread(target=self._run, name=f"encode-{name}", daemon=True)
            self._thread.start()

    def encode(self, frame: av.VideoFrame, pts: int, force_idr: bool) -> None:
        """Encode ``frame`` at ``pts``. The same frame object can come again (a repeated slot, or the decoded
        frame itself as the top rung), so its pts is set on the lane's thread just before the encoder copies it."""
        if self._thread is None:
            self._encode(frame, pts, force_idr)
        else:
            self._put((frame, pts, force_idr))

    def finish(self) -> None:
        """Flush the encoder (after the last frame)."""
        if self._thread is None:
            self._write(self.session.flush())
        else:
            self._put(self._FINISH)

    def join(self) -> None:
        """Wait for the lane to drain; re-raise what its encoder raised."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop without flushing (the chunk failed); returns once the thread has let go of the session."""
        if self._thread is None or not self._thread.is_alive():
            return
        self._put(self._STOP, raise_error=False)
        self._thread.join()

    def _put(self, item: Any, raise_error: bool = True) -> None:
        assert self._thread is not None
        while True:
            if self._error is not None or not self._thread.is_alive():
                if raise_error and self._error is not None:
                    raise self._error
                return
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is self._STOP:
                    return
                if item is self._FINISH:
                    self._write(self.session.flush())
                    return
                self._encode(*item)
        except BaseException as e:  # noqa: BLE001 — handed to the chunk's thread, which raises it
            self._error = e

    def _encode(self, frame: av.VideoFrame, pts: int, force_idr: bool) -> None:
        frame.pts = pts
        frame.time_base = self.writer.params.time_base
        self._write(self.session.encode(frame, force_idr))

    def _write(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self.writer.write(packet, self.ticks)  # refuses a packet without timestamps
            if packet.is_keyframe and packet.pts is not None:
                self.keyframes.append(packet.pts // self.ticks)


#: scaled frames a rendition's lane may hold waiting for its encoder
_LANE_DEPTH = 4
