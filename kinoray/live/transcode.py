"""The live ladder: one publisher's FLV stream in, HLS with CMAF segments out, as the stream arrives.

Video is decoded once and every rung (the VOD ladder's rungs capped at the source, :func:`ladder_for_size`)
is scaled and encoded through the encoder registry (libx264 tuned for zero latency on CPU; NVENC where
``auto`` finds it), with an IDR forced on all rungs at the same frame — the first frame at or after each
``segment_seconds`` boundary of the source's own clock — so every rung's segments start together and a player
switches rungs at any boundary. Audio (AAC, what RTMP publishers send) is copied.

Each rung and the audio go to FFmpeg's HLS muxer through PyAV: fMP4 segments (CMAF), written to a temporary
name and renamed, a sliding playlist of ``window_segments``, republished by :mod:`kinoray.live.hlsmux` with
``EXT-X-PROGRAM-DATE-TIME`` on every segment (the publisher's clock at its first frame) and, after a replaced
transcoder's discontinuity, an ``EXT-X-MAP`` of its own init; ``master.m3u8`` is the master. At the publisher's
end the playlists get ``EXT-X-ENDLIST``.

Low latency (``part_seconds`` set): the same decode, ladder and forced IDRs, but packaged by kinoray's own LL-HLS
packager (:mod:`kinoray.live.llhls`, fragments from :mod:`kinoray.live.cmaf`) instead of FFmpeg's HLS muxer,
which cannot write parts: each encoded packet goes straight into its rung's part, one CMAF fragment per part,
parts and segments cut on one grid for every rung and the audio.

Passthrough (``source_passthrough="auto"``, :mod:`kinoray.live.passthrough`): when the source is H.264 at the
ladder's top size with IDRs at most ``passthrough_max_gop`` segments apart, the top rung is the publisher's own
pictures, restamped and repackaged (no decode, no encode); segments start only at the source's IDRs (every
``round(segment / GOP)``-th), and the lower rungs, decoded and encoded as above, get their IDRs forced on those
same pictures. Anything else is transcoded as above.

Audio only (``audio_only``: Mux's ``audio_only`` live streams): no ladder; any video the publisher sends is
dropped, the AAC is copied into ``audio/`` as above (LL-HLS parts of a whole number of AAC frames at low latency)
and the master lists that one audio variant (``CODECS="mp4a…"``, no resolution).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from kinoray.encoders.base import EncoderSession, EncoderSettings
from kinoray.encoders.registry import select_encoder
from kinoray.errors import InvalidMediaError, UnsupportedMediaError
from kinoray.live import llhls
from kinoray.live.cmaf import Sample, annexb_to_lengths, init_segment, ticks
from kinoray.live.hlsmux import HlsOutput
from kinoray.live.passthrough import BitrateMeter, SegmentCuts, is_idr, length_size, measure_gop
from kinoray.live.pipe import TagPipe
from kinoray.logs import native_output_to_logging
from kinoray.media.codecs import codec_string
from kinoray.media.ladder import Rendition, ladder_for_size
from kinoray.media.package import add_packet_stream
from kinoray.media.packets import StreamParameters

__all__ = ["MASTER", "LiveOptions", "LiveResult", "LiveTranscoder"]

log = logging.getLogger(__name__)

_TIME_BASE = Fraction(1, 90_000)
_PLAYLIST = "index.m3u8"
MASTER = "master.m3u8"
_AUDIO = "audio"
#: AAC frames a passed-through low-latency stream holds back at most while waiting for video (~4 s at 48 kHz)
_HELD_AUDIO = 200


@dataclass(frozen=True)
class LiveOptions:
    """How a live stream is packaged. ``segment_seconds``: 2 for reduced latency, 4–6 for standard;
    ``window_segments``: segments kept in the playlists (the DVR window); ``heights``: the ladder's rungs by short
    side (capped at the source); ``encoder``: a registry name or ``auto``; ``part_seconds``: LL-HLS parts of
    about this length (low latency; ``None``: plain HLS from FFmpeg's muxer); ``audio_only``: no video ladder, the
    audio alone (video dropped); ``source_passthrough``: ``auto`` passes an H.264 source through as the top rung
    when its IDRs are at most ``passthrough_max_gop`` × ``segment_seconds`` apart (costs one GOP of delay
    before the first segment, to measure it), ``off`` encodes every rung."""

    segment_seconds: float = 2.0
    window_segments: int = 30
    heights: tuple[int, ...] = (720, 480, 360)
    encoder: str = "auto"
    preset: str = "veryfast"
    part_seconds: float | None = None
    audio_only: bool = False
    source_passthrough: str = "off"
    passthrough_max_gop: float = 1.5

    def __post_init__(self) -> None:
        if not 0.5 <= self.segment_seconds <= 10:
            raise ValueError("segment_seconds must be within 0.5 and 10")
        if self.window_segments < 3:
            raise ValueError("a live playlist needs at least 3 segments")
        if self.part_seconds is not None and not 0.1 <= self.part_seconds <= self.segment_seconds:
            raise ValueError("part_seconds must be within 0.1 and segment_seconds")
        if self.source_passthrough not in ("auto", "off"):
            raise ValueError("source_passthrough must be auto or off")
        if not 1 <= self.passthrough_max_gop <= 10:
            raise ValueError("passthrough_max_gop must be within 1 and 10")


@dataclass
class LiveResult:
    """What a live session produced, filled in as it runs."""

    renditions: list[Rendition] = field(default_factory=list)
    frames_in: int = 0
    frames_out: dict[str, int] = field(default_factory=dict)
    segments: int = 0
    parts: int = 0
    encoder: str = ""
    error: str | None = None
    #: The source's video frame rate, once known (what a slate is made at: :mod:`kinoray.live.slate`).
    frame_rate: Fraction | None = None
    #: The rung that is the source's own pictures (passthrough), if any; its ``frames_out`` are packets copied.
    passthrough: str | None = None
    #: The source's keyframe interval, where it was measured (``source_passthrough="auto"``).
    source_gop: Fraction | None = None


class _EncodedRung:
    """What every encoded rung shares: its rendition, its encoder session and the pictures it was given."""

    def __init__(self, rendition: Rendition, session: EncoderSession) -> None:
        self.rendition, self.session = rendition, session
        self.frames = 0

    @property
    def extradata(self) -> bytes:
        return self.session.extradata

    @property
    def bandwidth(self) -> int:
        return self.rendition.max_bitrate

    def _encode(self, frame: av.VideoFrame, pts: int, force_idr: bool) -> list[av.Packet]:
        """``frame`` scaled to the rung, encoded (an IDR when ``force_idr``): the packets the encoder gave."""
        scaled = frame.reformat(width=self.rendition.width, height=self.rendition.height, format="yuv420p")
        scaled.pts, scaled.time_base = pts, _TIME_BASE
        self.frames += 1
        return self.session.encode(scaled, force_idr)


class _Rung(_EncodedRung):
    """A rung of the plain HLS ladder: its encoder and FFmpeg's HLS muxer."""

    def __init__(self, rendition: Rendition, session: EncoderSession, directory: Path, options: LiveOptions,
                 rate: Fraction, resume: bool, anchor: Callable[[], float | None],
                 segment: Fraction | None = None) -> None:
        super().__init__(rendition, session)
        directory.mkdir(parents=True, exist_ok=True)
        self.output = _hls_output(directory, options, resume, segment, anchor=anchor)
        self.stream = add_packet_stream(self.output.container, StreamParameters(
            codec=session.codec_name, time_base=_TIME_BASE, extradata=session.extradata,
            width=rendition.width, height=rendition.height))
        self.stream.codec_context.bit_rate = rendition.max_bitrate
        # encoders leave durations 0; the muxer needs one for each segment's last frame (EXTINF)
        self.frame_ticks = max(1, round(1 / (rate * _TIME_BASE)))

    def encode(self, frame: av.VideoFrame, pts: int, force_idr: bool) -> None:
        self._mux(self._encode(frame, pts, force_idr))

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            packet.stream = self.stream
            packet.time_base = _TIME_BASE
            if not packet.duration:
                packet.duration = self.frame_ticks
            self.output.mux(packet)

    def close(self) -> None:
        try:
            self._mux(self.session.flush())
        finally:
            self.session.close()
            self.output.close()


class _PartRung(_EncodedRung):
    """A rung of the low-latency ladder: its encoder and its LL-HLS track."""

    def __init__(self, rendition: Rendition, session: EncoderSession, track: llhls.PartTrack) -> None:
        super().__init__(rendition, session)
        self.track = track

    def encode(self, frame: av.VideoFrame, pts: int, force_idr: bool) -> bool:
        """Whether a part was closed."""
        return self._push(self._encode(frame, pts, force_idr))

    def _push(self, packets: list[av.Packet]) -> bool:
        closed = False
        scale = self.track.init.timescale
        for packet in packets:
            pts = packet.pts if packet.pts is not None else packet.dts
            dts = packet.dts if packet.dts is not None else pts
            if pts is None or dts is None:
                continue  # nothing an encoder emits for a picture
            sample = Sample(annexb_to_lengths(bytes(packet)), dts=ticks(dts * _TIME_BASE, scale),
                            cts=ticks(pts * _TIME_BASE, scale) - ticks(dts * _TIME_BASE, scale),
                            sync=packet.is_keyframe)
            closed = self.track.push(sample, pts * _TIME_BASE) or closed
        return closed

    def close(self) -> None:
        try:
            self._push(self.session.flush())
        finally:
            self.session.close()


@dataclass
class _Passthrough:
    """The plan of a passed-through source: its IDR detection (``length_size`` of its NAL units), where segments
    start (``cuts``), its configuration and the measured bitrate."""

    rendition: Rendition
    extradata: bytes
    length_size: int
    cuts: SegmentCuts
    meter: BitrateMeter


@dataclass(frozen=True, slots=True)
class _Restamped:
    """A source packet on the ladder's clock (90 kHz ticks): whether it is an IDR, starts a segment, and made
    the measured bandwidth grow enough to write the master again."""

    dts: int
    pts: int
    idr: bool
    cut: bool
    raised: bool


class _SourceClock:
    """The source's video packets of a passed-through stream, restamped: 90 kHz from the first IDR's decode time
    (``origin``, the whole ladder's time 0), packets before it dropped, segment starts decided
    (:class:`~kinoray.live.passthrough.SegmentCuts`) and remembered for the encoded rungs (``cuts``, presentation
    times in 90 kHz ticks)."""

    def __init__(self, video: Any, plan: _Passthrough) -> None:
        self.video, self.plan = video, plan
        self.origin: Fraction | None = None
        self.cuts: deque[int] = deque()
        self.last_dts = -1
        self.packets = 0

    def take(self, packet: Any) -> _Restamped | None:
        """The packet restamped; ``None``: a packet not to use.

        Raises:
            UnsupportedMediaError: the publisher changed its H.264 configuration (the passed-through rung's init
                segment would no longer describe its pictures; a transcoder started again decides anew).
        """
        if packet.pts is None:
            return None  # the demuxer's flush packet
        if packet.has_sidedata("new_extradata") and \
                bytes(packet.get_sidedata("new_extradata")) != self.plan.extradata:
            raise UnsupportedMediaError("the publisher changed its H.264 configuration mid-stream")
        base = self.video.time_base
        presented = Fraction(packet.pts) * base
        decoded = Fraction(packet.dts) * base if packet.dts is not None else presented
        idr = packet.is_keyframe and is_idr(bytes(packet), self.plan.length_size)
        if self.origin is None:
            if not idr:
                return None
            self.origin = decoded
        dts, pts = int((decoded - self.origin) / _TIME_BASE), int((presented - self.origin) / _TIME_BASE)
        if dts <= self.last_dts or pts < dts:
            log.warning("a source packet out of order dropped", extra={"dts": dts, "pts": pts})
            return None
        self.last_dts = dts
        cut = idr and self.plan.cuts.cut(presented)
        raised = False
        if cut:
            self.cuts.append(pts)
            raised = self.plan.meter.cut(presented)
        self.plan.meter.add(packet.size)
        self.packets += 1
        return _Restamped(dts, pts, idr, cut, raised)

    def forced(self, pts: int) -> bool:
        """Whether the decoded picture at ``pts`` starts a segment (an encoded rung's IDR goes there)."""
        while self.cuts and self.cuts[0] < pts:
            self.cuts.popleft()
        if self.cuts and self.cuts[0] == pts:
            self.cuts.popleft()
            return True
        return False


class _CopyRung:
    """The passed-through top rung of plain HLS: the source's packets into FFmpeg's HLS muxer, restamped, with
    the keyframe flag only on the IDRs that start segments (the muxer cuts at every flagged packet)."""

    def __init__(self, plan: _Passthrough, directory: Path, options: LiveOptions, rate: Fraction, resume: bool,
                 anchor: Callable[[], float | None], segment: Fraction) -> None:
        self.rendition, self.extradata, self.plan = plan.rendition, plan.extradata, plan
        directory.mkdir(parents=True, exist_ok=True)
        self.output = _hls_output(directory, options, resume, segment, anchor=anchor)
        self.stream = add_packet_stream(self.output.container, StreamParameters(
            codec="h264", time_base=_TIME_BASE, extradata=plan.extradata, width=plan.rendition.width,
            height=plan.rendition.height))
        self.stream.codec_context.bit_rate = plan.rendition.max_bitrate
        self.frames = 0
        self.frame_ticks = max(1, round(1 / (rate * _TIME_BASE)))

    @property
    def bandwidth(self) -> int:
        return self.plan.meter.peak

    def copy(self, packet: Any, at: _Restamped) -> None:
        packet.stream = self.stream
        packet.time_base = _TIME_BASE
        packet.dts, packet.pts, packet.duration = at.dts, at.pts, self.frame_ticks
        packet.is_keyframe = at.cut
        self.output.mux(packet)
        self.frames += 1

    def close(self) -> None:
        self.output.close()


class _CopyPartRung:
    """The passed-through top rung of low latency: the source's samples into its LL-HLS track, parts on the
    decode-time grid from each segment's IDR."""

    def __init__(self, plan: _Passthrough, track: llhls.PartTrack, grid: llhls.KeyframeGrid) -> None:
        self.rendition, self.extradata, self.plan, self.track, self.grid = (plan.rendition, plan.extradata, plan,
                                                                            track, grid)
        self.frames = 0

    @property
    def bandwidth(self) -> int:
        return self.plan.meter.peak

    def copy(self, packet: Any, at: _Restamped) -> bool:
        """Whether a part was closed."""
        scale = self.track.init.timescale
        decoded = at.dts * _TIME_BASE
        if at.cut:
            self.grid.segment_at(decoded)
        start = ticks(decoded, scale)
        sample = Sample(bytes(packet), dts=start, cts=ticks(at.pts * _TIME_BASE, scale) - start, sync=at.idr)
        self.frames += 1
        return self.track.push(sample, decoded)


def _publish(tracks: list[llhls.PartTrack]) -> None:
    """Every track's playlist, with the others' rendition reports as they stand now."""
    reports = [track.report() for track in tracks]
    for track in tracks:
        track.write_playlist(reports)


def _hls_output(directory: Path, options: LiveOptions, resume: bool, segment: Fraction | None = None, *,
                anchor: Callable[[], float | None], audio: bool = False) -> HlsOutput:
    # Resuming (a replaced transcoder, same publisher): the segment list goes on where it stopped, after an
    # EXT-X-DISCONTINUITY (the new encoder's timestamps start again at 0) and with an init of its own.
    # EXT-X-PROGRAM-DATE-TIME is kinoray's (HlsOutput), not the muxer's.
    return HlsOutput(directory, {
        # video: cut at each IDR (forced every segment_seconds, or the passed-through source's segment starts), a
        # hair under so timestamp rounding never skips one; audio (any packet may start a segment): on the grid
        # itself, which the muxer counts from the first packet (n × hls_time), so its segments follow the video's
        "hls_time": f"{float(segment or options.segment_seconds) * (1 if audio else 0.9):.3f}",
        "hls_list_size": str(options.window_segments),
        "hls_segment_type": "fmp4",
        "hls_segment_filename": str(directory / "seg_%05d.m4s"),
        "hls_delete_threshold": "2",
        "start_number": "1",
    }, "independent_segments+temp_file+delete_segments", resume=resume, anchor=anchor)


class LiveTranscoder:
    """Reads ``pipe`` (one publisher's FLV) and writes the live HLS ladder under ``directory``:
    ``master.m3u8``, ``<rung>/index.m3u8`` + ``init.mp4`` + ``seg_NNNNN.m4s``, ``audio/…`` — the layout of a
    VOD asset's media, so the delivery edge serves both the same way. ``resume``: a transcoder taking over from
    one that died continues the playlists after a discontinuity, with its own ``init-<n>.mp4``.

    :meth:`run` blocks until the publisher ends (or fails) and returns the :class:`LiveResult`; run it on a
    thread of its own. A source kinoray cannot read ends the session with ``result.error`` set."""

    def __init__(self, pipe: TagPipe, directory: Path, options: LiveOptions | None = None, *,
                 resume: bool = False) -> None:
        self.pipe, self.directory, self.resume = pipe, Path(directory), resume
        self.options = options or LiveOptions()
        self.result = LiveResult()
        self.started = threading.Event()  # set once the master playlist is written
        self._origin: Fraction | None = None  # the source's time (s) of the ladder's media time 0
        self._clock: float | None = None  # the publisher's clock, fixed for plain HLS's dates (_source_anchor)

    @property
    def top(self) -> Path | None:
        """The directory of the top media playlist — the first rung, or the audio of an audio-only stream — once
        known: its segments are the stream's progress."""
        if self.options.audio_only:
            return self.directory / _AUDIO
        return self.directory / self.result.renditions[0].name if self.result.renditions else None

    def run(self) -> LiveResult:
        try:
            with native_output_to_logging():
                self._run()
        except (av.FFmpegError, InvalidMediaError, UnsupportedMediaError, ValueError) as error:
            self.result.error = f"{type(error).__name__}: {error}"
            log.warning("live transcode ended with an error", extra={"error": self.result.error})
        if self.pipe.error and not self.result.error:
            self.result.error = self.pipe.error
        return self.result

    def _run(self) -> None:
        try:
            # FFmpeg reads the FLV up to probesize before the first packet: 1 MB is a fraction of a second of
            # video, but minutes of audio alone, whose parameters are all in its first tags
            probesize = "4096" if self.options.audio_only else "1000000"
            source = av.open(self.pipe, "r", format="flv", options={"probesize": probesize, "analyzeduration": "0"})
        except av.FFmpegError as error:
            raise InvalidMediaError(f"the published stream is not FLV that FFmpeg can read: {error}") from error
        rungs: list[_Rung | _CopyRung] = []
        audio_out: Any = None
        packets: Iterable[Any] = source.demux()
        plan: _Passthrough | None = None
        try:
            audio = source.streams.audio[0] if source.streams.audio else None
            if self.options.audio_only:
                if audio is None:
                    raise UnsupportedMediaError("the published stream of an audio-only live stream has no audio")
                ladder: Sequence[Rendition] = ()
                video, choice = None, None
                # parts of a whole number of AAC frames
                rate = Fraction(audio.codec_context.sample_rate, audio.codec_context.frame_size or 1024)
            else:
                if not source.streams.video:
                    raise UnsupportedMediaError("the published stream has no video")
                video = source.streams.video[0]
                video.thread_type = "AUTO"
                ladder = ladder_for_size(video.codec_context.width, video.codec_context.height,
                                         self.options.heights)
                choice = select_encoder("h264", self.options.encoder)
                self.result.encoder, self.result.renditions = choice.name, list(ladder)
                rate = video.guessed_rate or video.average_rate or Fraction(30)
                self.result.frame_rate = Fraction(rate)
                if self.options.source_passthrough == "auto":
                    plan, packets = self._plan_passthrough(video, ladder, packets)
                if plan is not None:
                    ladder = ladder[1:]  # the encoded rungs, below the source's own
                    self.result.renditions = [plan.rendition, *ladder]
                    self.result.passthrough = plan.rendition.name
                    self.result.encoder = choice.name if ladder else "copy"
            if self.options.part_seconds is not None:
                self._run_parts(packets, video, audio, ladder, choice, Fraction(rate), plan)
                return
            segment = plan.cuts.segment if plan is not None else None
            if plan is not None:
                rungs.append(_CopyRung(plan, self.directory / plan.rendition.name, self.options, Fraction(rate),
                                       self.resume, self._ladder_anchor, plan.cuts.segment))
            for rendition in ladder:
                session = self._open_session(choice, rendition, Fraction(rate))
                rungs.append(_Rung(rendition, session, self.directory / rendition.name, self.options, Fraction(rate),
                                   self.resume, self._ladder_anchor, segment))
            if audio is not None:
                if audio.codec_context.name != "aac":
                    raise UnsupportedMediaError(f"live audio must be AAC, not {audio.codec_context.name}")
                (self.directory / _AUDIO).mkdir(parents=True, exist_ok=True)
                # the audio is copied on the source's own clock, whose 0 is the pipe's
                audio_out = _hls_output(self.directory / _AUDIO, self.options, self.resume, segment,
                                        anchor=self._source_anchor, audio=True)
                audio_stream = audio_out.container.add_stream_from_template(audio)
            self._write_master(rungs, audio)
            self.started.set()
            self._pump(packets, video, audio, rungs, audio_out, audio_stream if audio is not None else None, plan)
        finally:
            for rung in rungs:
                try:
                    rung.close()
                finally:
                    self.result.frames_out[rung.rendition.name] = rung.frames
            if audio_out is not None:
                audio_out.close()
            source.close()
            if (top := self.top) is not None:
                self.result.segments = len(list(top.glob("seg_*.m4s")))

    def _plan_passthrough(self, video: Any, ladder: Sequence[Rendition], packets: Iterable[Any]
                          ) -> tuple[_Passthrough | None, Iterable[Any]]:
        """Whether the source's video becomes the top rung as it is (see the module docstring), and the packets
        to go on with (those read to measure its keyframe interval first)."""
        context = video.codec_context
        top = ladder[0]
        if context.name != "h264" or (top.width, top.height) != (context.width, context.height):
            log.info("live source transcoded: not H.264 at the ladder's top size",
                     extra={"codec": context.name, "size": f"{context.width}x{context.height}"})
            return None, packets
        extradata = bytes(context.extradata or b"")
        try:
            size = length_size(extradata)
        except ValueError:
            return None, packets
        segment = Fraction(self.options.segment_seconds).limit_denominator(1000)
        limit = segment * Fraction(self.options.passthrough_max_gop).limit_denominator(1000)
        measured = measure_gop(iter(packets), video, size, limit)
        packets = itertools.chain(measured.held, packets)
        self.result.source_gop = measured.gop
        if measured.gop is None or measured.gop > limit:
            log.info("live source transcoded: its keyframes are too far apart to cut segments at",
                     extra={"gop_seconds": float(measured.gop) if measured.gop else None,
                            "limit_seconds": float(limit)})
            return None, packets
        rate = video.guessed_rate or video.average_rate or Fraction(30)
        bitrate = max(1, math.ceil(measured.gop_bytes * 8 / measured.gop)) if measured.gop_bytes else top.max_bitrate
        rendition = Rendition(top.name, top.width, top.height, max_bitrate=bitrate, buffer_size=2 * bitrate)
        cuts = SegmentCuts.for_gop(segment, measured.gop, 1 / Fraction(rate) / 2)
        log.info("live source passed through as the top rung",
                 extra={"rung": top.name, "gop_seconds": float(measured.gop), "segment_seconds": float(cuts.segment)})
        return _Passthrough(rendition, extradata, size, cuts, BitrateMeter(bitrate)), packets

    def _open_session(self, choice: Any, rendition: Rendition, rate: Fraction) -> EncoderSession:
        session: EncoderSession = choice.backend.open(EncoderSettings(
            codec="h264", width=rendition.width, height=rendition.height, frame_rate=rate,
            time_base=_TIME_BASE, gop_frames=int(rate * self.options.segment_seconds * 10) + 1,
            max_bitrate=rendition.max_bitrate, buffer_size=rendition.max_bitrate,
            preset=self.options.preset, bframes=0, threads=1,
            extra=(("tune", "zerolatency"),) if choice.name == "libx264" else ()))
        return session

    # --- low latency: LL-HLS parts -----------------------------------------------------------------------------

    def _track(self, name: str, init: Any, grid: llhls.PartGrid | llhls.KeyframeGrid, *, part_target: float, target_duration: int,
               sample: Fraction) -> llhls.PartTrack:
        directory = self.directory / name
        previous: list[Any] = []
        first_msn, discontinuity_sequence = 1, 0
        init_name = llhls.INIT
        playlist = directory / _PLAYLIST
        if self.resume and playlist.exists():  # a replaced transcoder: go on after what was listed
            try:
                previous, first_msn, discontinuity_sequence = llhls.resumed_segments(playlist.read_text())
                # its own init: its encoder (or a passthrough decided anew) may make another one than the listed's
                init_name = llhls.next_init_name([llhls.INIT, *(segment.init for segment in previous)])
            except (ValueError, KeyError) as error:
                log.warning("live playlist not resumable; starting again", extra={"track": name,
                                                                                  "error": str(error)})
        return llhls.PartTrack(name, directory, init, grid, anchor=time.time(), part_target=part_target,
                               target_duration=target_duration, window_segments=self.options.window_segments,
                               max_sample_ticks=init.timescale,
                               default_ticks=max(1, ticks(sample, init.timescale)), first_msn=first_msn,
                               previous=previous, discontinuity_sequence=discontinuity_sequence, init_name=init_name)

    def _run_parts(self, packets: Iterable[Any], video: Any, audio: Any, ladder: Sequence[Rendition], choice: Any,
                   rate: Fraction, plan: _Passthrough | None) -> None:
        """The low-latency ladder: see the module docstring and :mod:`kinoray.live.llhls`."""
        assert self.options.part_seconds is not None
        frame = 1 / rate
        # parts of a whole number of frames, segments of a whole number of parts: every cut on a frame
        part = max(1, round(Fraction(self.options.part_seconds).limit_denominator(1000) * rate)) * frame
        per_segment = max(1, round(Fraction(self.options.segment_seconds).limit_denominator(1000) / part))
        target_duration = max(1, math.ceil(part * per_segment if plan is None else plan.cuts.segment))

        def grid(tolerance: Fraction) -> llhls.PartGrid | llhls.KeyframeGrid:
            # passthrough: segments where the source's IDRs are (announced by _SourceClock), parts inside them
            return llhls.PartGrid(part, per_segment, tolerance) if plan is None else \
                llhls.KeyframeGrid(part, tolerance)

        rungs: list[_PartRung] = []
        copy: _CopyPartRung | None = None
        tracks: list[llhls.PartTrack] = []
        audio_track: llhls.PartTrack | None = None
        try:
            if plan is not None:
                rendition = plan.rendition
                init = init_segment(StreamParameters(codec="h264", time_base=_TIME_BASE, extradata=plan.extradata,
                                                     width=rendition.width, height=rendition.height))
                copy_grid = llhls.KeyframeGrid(part, frame / 2)
                track = self._track(rendition.name, init, copy_grid, part_target=llhls.part_target_for(part, frame),
                                    target_duration=target_duration, sample=frame)
                copy = _CopyPartRung(plan, track, copy_grid)
                tracks.append(track)
            for rendition in ladder:
                session = self._open_session(choice, rendition, rate)
                init = init_segment(StreamParameters(codec=session.codec_name, time_base=_TIME_BASE,
                                                     extradata=session.extradata, width=rendition.width,
                                                     height=rendition.height))
                track = self._track(rendition.name, init, grid(frame / 2),
                                    part_target=llhls.part_target_for(part, frame), target_duration=target_duration,
                                    sample=frame)
                rungs.append(_PartRung(rendition, session, track))
                tracks.append(track)
            if audio is not None:
                context = audio.codec_context
                if context.name != "aac":
                    raise UnsupportedMediaError(f"live audio must be AAC, not {context.name}")
                audio_frame = Fraction(context.frame_size or 1024, context.sample_rate)
                init = init_segment(StreamParameters(codec="aac", time_base=Fraction(1, context.sample_rate),
                                                     extradata=bytes(context.extradata or b""),
                                                     sample_rate=context.sample_rate, channels=context.channels))
                audio_track = self._track(_AUDIO, init, grid(audio_frame / 2),
                                          part_target=llhls.part_target_for(part, audio_frame),
                                          target_duration=target_duration, sample=audio_frame)
                tracks.append(audio_track)
            if choice is not None and plan is None:
                self.result.encoder, self.result.renditions = choice.name, list(ladder)
            listed: list[Any] = [*([copy] if copy is not None else []), *rungs]
            self._write_master(listed, audio)
            self.started.set()
            self._pump_parts(packets, video, audio, rungs, copy, audio_track, tracks,
                             llhls.PartGrid(part, per_segment, frame / 2), plan, listed)
        finally:
            if copy is not None:
                self.result.frames_out[copy.rendition.name] = copy.frames
            for rung in rungs:
                try:
                    rung.close()
                finally:
                    self.result.frames_out[rung.rendition.name] = rung.frames
            for track in tracks:
                track.finish()
            _publish(tracks)
            if tracks:  # the top rung's, or the audio's alone
                self.result.segments = len(list((self.directory / tracks[0].name).glob("seg_*.m4s")))
                self.result.parts = tracks[0].parts_written

    def _pump_parts(self, packets: Iterable[Any], video: Any, audio: Any, rungs: list[_PartRung],
                    copy: _CopyPartRung | None, audio_track: llhls.PartTrack | None, tracks: list[llhls.PartTrack],
                    grid: llhls.PartGrid, plan: _Passthrough | None, listed: list[Any]) -> None:
        origin: Fraction | None = None
        last_pts = -1
        audio_next: int | None = None  # the next AAC frame's time in samples, when they follow on
        clock = _SourceClock(video, plan) if plan is not None else None
        # passthrough: audio waits until the video's decode time has passed it, so the segment start it may fall
        # after (announced when the IDR is read) is known before it is pushed
        held: deque[tuple[Sample, Fraction]] = deque()

        def push_audio(until: Fraction | None) -> None:
            assert audio_track is not None
            closed = False
            while held and (until is None or held[0][1] <= until or len(held) > _HELD_AUDIO):
                closed = audio_track.push(*held.popleft()) or closed
            if closed:
                _publish(tracks)

        for packet in packets:
            if audio is not None and packet.stream is audio:
                if video is None and origin is None and packet.pts is not None:
                    origin = Fraction(packet.pts) * audio.time_base  # audio only: its first frame starts the grid
                    self._anchor(tracks, origin)
                if packet.pts is None or origin is None or audio_track is None:
                    continue  # the flush packet, or audio before the first picture: nothing to align it to
                rate = audio.codec_context.sample_rate
                when = Fraction(packet.pts) * audio.time_base - origin
                if when < 0:
                    continue
                measured = round(when * rate)
                frame_size = audio.codec_context.frame_size or 1024
                # AAC frames are exactly frame_size samples: FLV's millisecond stamps only place the first
                # (and any after a gap of more than two frames)
                dts = audio_next if audio_next is not None and abs(measured - audio_next) <= 2 * frame_size \
                    else measured
                audio_next = dts + frame_size
                held.append((Sample(bytes(packet), dts=round(dts * audio_track.init.timescale / rate)),
                             Fraction(dts, rate)))
                push_audio(None if clock is None else (clock.last_dts * _TIME_BASE if clock.last_dts >= 0 else None))
                continue
            if packet.stream is not video:
                continue
            if clock is not None and copy is not None:
                if packet.pts is None:
                    if not rungs:
                        continue
                    frames = packet.decode()  # the flush packet at the end drains the decoder
                else:
                    at = clock.take(packet)
                    if at is None:
                        continue
                    if origin is None:
                        origin = clock.origin
                        assert origin is not None
                        self._anchor(tracks, origin)
                    if at.cut:
                        for track in tracks[1:]:  # the encoded rungs' and the audio's, by presentation time
                            assert isinstance(track.grid, llhls.KeyframeGrid)
                            track.grid.segment_at(at.pts * _TIME_BASE)
                    frames = packet.decode() if rungs else []
                    closed = copy.copy(packet, at)
                    self.result.frames_in += 1
                    if at.raised:
                        self._write_master(listed, audio)
                    if closed:
                        _publish(tracks)
                    if audio_track is not None:
                        push_audio(at.dts * _TIME_BASE)
            else:
                frames = packet.decode()
            for frame in frames:
                if frame.pts is None:
                    continue
                when = Fraction(frame.pts) * video.time_base
                if origin is None:
                    origin = when
                    self._anchor(tracks, when)
                pts = int((when - origin) / _TIME_BASE)
                if pts <= last_pts or pts < 0:
                    continue
                last_pts = pts
                force = clock.forced(pts) if clock is not None else grid.cut(pts * _TIME_BASE) == 2
                closed = False
                for rung in rungs:
                    closed = rung.encode(frame, pts, force) or closed
                if clock is None:
                    self.result.frames_in += 1
                if closed:
                    _publish(tracks)
        if audio_track is not None:
            push_audio(None)

    def _source_anchor(self) -> float | None:
        """EXT-X-PROGRAM-DATE-TIME of plain HLS: the publisher's clock (the wall time of the source's time 0) as
        the pipe estimated it when the first output asked, one value for every rung and the audio."""
        if self._clock is None:
            self._clock = self.pipe.clock
        return self._clock

    def _ladder_anchor(self) -> float | None:
        """The publisher's clock of the ladder's media time 0 (the source's ``origin``)."""
        clock = self._source_anchor()
        return clock + float(self._origin) if clock is not None and self._origin is not None else None

    def _anchor(self, tracks: list[llhls.PartTrack], when: Fraction) -> None:
        """EXT-X-PROGRAM-DATE-TIME: the publisher's clock when it sent the first frame at ``when`` (the pipe's),
        else now."""
        anchor = self.pipe.clock + float(when) if self.pipe.clock is not None else time.time()
        for track in tracks:
            track.anchor = anchor

    def _pump(self, packets: Iterable[Any], video: Any, audio: Any, rungs: list[_Rung | _CopyRung],
              audio_out: Any, audio_stream: Any, plan: _Passthrough | None) -> None:
        segment = Fraction(self.options.segment_seconds).limit_denominator(1000)
        origin: Fraction | None = None
        next_cut = Fraction(0)
        last_pts = -1
        clock = _SourceClock(video, plan) if plan is not None else None
        copy = next((rung for rung in rungs if isinstance(rung, _CopyRung)), None)
        encoded = [rung for rung in rungs if isinstance(rung, _Rung)]
        for packet in packets:
            if audio is not None and packet.stream is audio:
                if packet.dts is None:
                    continue  # the demuxer's flush packet: nothing to copy
                packet.stream = audio_stream
                audio_out.mux(packet)
                continue
            if packet.stream is not video:
                continue
            if clock is not None and copy is not None and packet.pts is not None:
                at = clock.take(packet)
                if at is None:
                    continue
                origin = self._origin = clock.origin
                if not encoded:
                    copy.copy(packet, at)
                    self.result.frames_in += 1
                    if at.raised:
                        self._write_master(rungs, audio)
                    continue
                frames = packet.decode()  # before the copy restamps the packet
                copy.copy(packet, at)
                self.result.frames_in += 1
                if at.raised:
                    self._write_master(rungs, audio)
            elif clock is not None and not encoded:
                continue
            else:
                frames = packet.decode()  # the flush packet at the end drains the decoder
            for frame in frames:
                if frame.pts is None:
                    continue
                when = Fraction(frame.pts) * video.time_base
                origin = self._origin = when if origin is None else origin
                offset = when - origin
                pts = int(offset / _TIME_BASE)
                if pts <= last_pts or pts < 0:
                    continue  # a publisher's clock that goes back: drop rather than break the muxers
                last_pts = pts
                if clock is not None:
                    force = clock.forced(pts)
                else:
                    force = offset >= next_cut
                    if force:
                        while next_cut <= offset:
                            next_cut += segment
                for rung in encoded:
                    rung.encode(frame, pts, force)
                if clock is None:
                    self.result.frames_in += 1

    def _write_master(self, rungs: Sequence[_Rung | _PartRung | _CopyRung | _CopyPartRung], audio: Any) -> None:
        """``master.m3u8``: each rung's ``CODECS`` from its own parameter sets (the source's SPS for a passed-through
        rung) and ``BANDWIDTH`` (the encoder's cap; measured for a passed-through rung, and written again when a
        segment's bitrate exceeds it)."""
        audio_codec = codec_string("aac", bytes(audio.codec_context.extradata or b"")) if audio is not None else ""
        audio_rate = 128_000 if audio is not None else 0
        lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
        if audio is not None:
            lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Default",DEFAULT=YES,AUTOSELECT=YES,'
                         f'CHANNELS="{audio.codec_context.channels}",URI="{_AUDIO}/{_PLAYLIST}"')
        for rung in rungs:
            codecs = codec_string("h264", rung.extradata) + (f",{audio_codec}" if audio_codec else "")
            attributes = [f"BANDWIDTH={rung.bandwidth + audio_rate}", f'CODECS="{codecs}"',
                          f"RESOLUTION={rung.rendition.width}x{rung.rendition.height}"]
            if audio is not None:
                attributes.append('AUDIO="audio"')
            lines += ["#EXT-X-STREAM-INF:" + ",".join(attributes), f"{rung.rendition.name}/{_PLAYLIST}"]
        if not rungs and audio is not None:  # audio only: the audio is the one variant
            lines[3:] = [f'#EXT-X-STREAM-INF:BANDWIDTH={audio_rate},CODECS="{audio_codec}"', f"{_AUDIO}/{_PLAYLIST}"]
        master = self.directory / MASTER
        temporary = master.with_suffix(".tmp")
        temporary.write_text("\n".join(lines) + "\n")
        temporary.replace(master)
        log.info("live master playlist written", extra={"rungs": [r.rendition.name for r in rungs],
                                                        "at": time.time()})
