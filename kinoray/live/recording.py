"""A live stream's recording, made of the live ladder's own CMAF segments: no second encode.

**While the stream runs** a :class:`SegmentRecorder` sits beside each transcoder run (a *section*: one publisher
connection, or the transcoder that took over after a failover) and watches its output directory. Every segment
a media playlist lists (``<track>/index.m3u8``, FFmpeg's HLS muxer or the LL-HLS packager alike) is copied,
before the DVR window drops it, to the recording asset's media, ``assets/<id>/media/<track>/seg_NNNNN.m4s``,
numbered on from the sections before, with its ``tfdt`` moved (:func:`~kinoray.live.fragments.shift_segment`)
so the sections follow each other on one timeline: each track of section *k* starts where the longest track of
section *k − 1* ended. The track's ``init.mp4`` is copied with its first segment. What was recorded is logged per
section in ``assets/<id>/recording/<section>.json`` (segment numbers, times, sizes), after the segments it names.

**When the session ends** :func:`publish_recording` turns the logs into a VOD asset's package, in the layout the
transcode pipeline writes: a VOD media playlist per track (``EXT-X-PLAYLIST-TYPE:VOD``, ``EXT-X-ENDLIST``; each
section after the first opens with ``EXT-X-DISCONTINUITY`` and its ``EXT-X-MAP``), ``master.m3u8``, a static
single-period DASH MPD over the same files, and ``highest.mp4`` remuxed from the top rung and the audio
(:mod:`kinoray.media.static`) — so static renditions, thumbnails and storyboards work as for any asset. The
cost is a read and a write of the top rung's bytes (the MP4), seconds for an hour's broadcast on local disk.

A recording whose sections changed format (a publisher that came back at another resolution, an encoder whose
parameter sets differ after a failover: another ``init.mp4``) cannot be one track per rung; it is refused
(:class:`~kinoray.errors.UnsupportedMediaError`) and the caller falls back to the source, when kept, or errors the asset.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from kinoray.errors import InvalidMediaError, KinorayError, StorageError, UnsupportedMediaError
from kinoray.live.fragments import read_init, segment_timing, shift_segment
from kinoray.live.llhls import INIT_PATTERN, PlaylistState
from kinoray.media.manifest import dash_mpd, hls_master_playlist, hls_media_playlist
from kinoray.media.package import INIT_NAME, SegmentInfo, Track, segment_file_name
from kinoray.store import keys
from kinoray.store.objects import ObjectStore

__all__ = ["PublishedRecording", "RecordingTarget", "SegmentRecorder", "discard_logs",
           "publish_recording", "recording_open", "recording_sections"]

log = logging.getLogger(__name__)

_PLAYLIST = "index.m3u8"
_AUDIO = "audio"
_SEGMENT = re.compile(r"seg_[0-9]{5,9}\.m4s")


@dataclass(frozen=True)
class RecordingTarget:
    """Where a transcoder run records: the recording asset and the publisher connection (``LivePublish.part``)."""

    asset_id: str
    connection: int

    def section(self, restart: int) -> str:
        """The section name of this connection's ``restart``-th transcoder (sorts in recording order)."""
        return f"{self.connection:04d}-{restart:02d}"


@dataclass
class _Track:
    """One track's part of a section's log."""

    init: str  # file name in media/<track>/
    digest: str
    timescale: int
    default_duration: int
    shift: int  # ticks added to this section's times
    segments: list[list[int]] = field(default_factory=list)  # [number, start, duration, samples, bytes]

    @property
    def end(self) -> int:
        return self.segments[-1][1] + self.segments[-1][2] if self.segments else 0


def recording_sections(store: ObjectStore, asset_id: str) -> list[dict[str, Any]]:
    """The recording's section logs, in recording order."""
    prefix = keys.recording_prefix(asset_id)
    names = sorted(key for key in store.list(prefix) if key.endswith(".json"))
    return [json.loads(store.get_bytes(name)) for name in names]


def recording_open(store: ObjectStore, asset_id: str) -> bool:
    """Whether the recording's newest section is still being recorded (its transcoder has not ended): publishing
    now would miss its last segments. (A section whose transcoder died stays open, but a newer one follows it.)"""
    sections = recording_sections(store, asset_id)
    return bool(sections) and not sections[-1].get("closed", False)


def _section_end(section: dict[str, Any]) -> Fraction:
    return Fraction(section.get("end", "0"))


class SegmentRecorder:
    """Records one transcoder run's segments (see the module docstring). Make it *before* the transcoder starts
    (what is already in ``directory`` then — a resumed run's playlists and segments — belongs to earlier
    sections); call :meth:`sync_once` every fraction of a segment (or :meth:`run` on a thread) and
    :meth:`close` after the transcoder ended."""

    def __init__(self, directory: Path, store: ObjectStore, target: RecordingTarget, section: str) -> None:
        self.directory, self.store, self.target, self.section = Path(directory), store, target, section
        self.media = keys.media_prefix(target.asset_id)
        self.log_key = f"{keys.recording_prefix(target.asset_id)}/{section}.json"
        self._baseline = {self._identity(path) for path in self.directory.glob("*/seg_*.m4s")}
        earlier = [s for s in recording_sections(store, target.asset_id) if s["section"] < section]
        self.start = max((_section_end(s) for s in earlier), default=Fraction(0))
        self._next: dict[str, int] = {}
        self._digests: dict[str, str] = {}
        for previous in earlier:
            for name, track in previous["tracks"].items():
                if track["segments"]:
                    self._next[name] = max(self._next.get(name, 1), track["segments"][-1][0] + 1)
                self._digests.setdefault(name, track["digest"])
        self.tracks: dict[str, _Track] = {}
        self._recorded: set[tuple[str, int, int]] = set()
        self.facts: dict[str, Any] = {}
        self.failures = 0
        self._lock = threading.Lock()  # one pass at a time: the polling thread's and close()'s
        self._closed = False

    @staticmethod
    def _identity(path: Path) -> tuple[str, int, int]:
        stat = path.stat()
        return f"{path.parent.name}/{path.name}", stat.st_ino, stat.st_mtime_ns

    def _listed(self, track_dir: Path) -> list[tuple[str, str]]:
        """The segments ``track_dir``'s playlist lists, each with the init its ``EXT-X-MAP`` names (a replaced
        transcoder's: ``init-<n>.mp4``)."""
        try:
            state = PlaylistState.parse((track_dir / _PLAYLIST).read_text())
        except (FileNotFoundError, UnicodeDecodeError, ValueError):
            return []
        names = [(state.lines[segment.uri_line].split("?")[0], segment.map_uri) for segment in state.segments]
        return [(name, init) for name, init in names if _SEGMENT.fullmatch(name) and INIT_PATTERN.fullmatch(init)]

    def sync_once(self) -> int:
        """Record the segments listed since the last pass; how many (none once closed)."""
        with self._lock:
            return 0 if self._closed else self._sync()

    def _sync(self) -> int:
        recorded = 0
        if not self.directory.is_dir():
            return 0  # the transcoder has not written yet
        for track_dir in sorted(path for path in self.directory.iterdir() if path.is_dir()):
            for name, init_name in self._listed(track_dir):
                path = track_dir / name
                try:
                    identity = self._identity(path)
                except FileNotFoundError:
                    continue  # an earlier run's, or dropped already
                if identity in self._baseline or identity in self._recorded:
                    continue
                try:
                    self._record(track_dir, path, init_name)
                except (KinorayError, OSError) as error:
                    self.failures += 1
                    log.warning("a live segment was not recorded", extra={"key": self.log_key, "segment": str(path),
                                                                           "error": str(error)[:300]})
                    break  # this track's next segments after it, in order, on the next pass
                self._recorded.add(identity)
                recorded += 1
        if recorded:
            self._write_log()
        return recorded

    def _record(self, track_dir: Path, path: Path, init_name: str) -> None:
        name = track_dir.name
        data = path.read_bytes()
        track = self.tracks.get(name)
        if track is None:  # this run's first segment: its init, compared with the earlier sections'
            init = (track_dir / init_name).read_bytes()
            header = read_init(init)
            digest = header.identity
            known = self._digests.get(name)
            init_name = INIT_NAME if known in (None, digest) else f"init-{self.section}.mp4"
            if known is None or init_name != INIT_NAME:
                self.store.put_bytes(init, f"{self.media}/{name}/{init_name}")
            first = segment_timing(data, header.default_duration).start
            track = _Track(init_name, digest, header.timescale, header.default_duration,
                           shift=round(self.start * header.timescale) - first)
            self.tracks[name] = track
        timing = segment_timing(data, track.default_duration)
        number = self._next.get(name, 1)
        self.store.put_bytes(shift_segment(data, track.shift, track.timescale),
                             f"{self.media}/{name}/{segment_file_name(number)}")
        self._next[name] = number + 1
        track.segments.append([number, timing.start + track.shift, timing.duration, timing.samples, len(data)])

    def _write_log(self) -> None:
        end = max((Fraction(track.end, track.timescale) for track in self.tracks.values() if track.segments),
                  default=self.start)
        body = {"section": self.section, "start": str(self.start), "end": str(end), "closed": False, **self.facts,
                "tracks": {name: {"init": track.init, "digest": track.digest, "timescale": track.timescale,
                                  "segments": track.segments} for name, track in self.tracks.items()}}
        try:
            self.store.put_bytes(json.dumps(body).encode(), self.log_key)
        except StorageError as error:
            self.failures += 1
            log.warning("a live recording log was not written", extra={"key": self.log_key, "error": str(error)})

    def run(self, stop: threading.Event, interval: float = 0.25) -> None:
        while not stop.wait(interval):
            try:
                self.sync_once()
            except Exception as error:  # noqa: BLE001 - a pass that failed is tried again; the stream goes on
                log.warning("live recording pass failed", extra={"key": self.log_key, "error": str(error)[:300]})

    def close(self, *, encoder: str | None = None, error: str | None = None, frames: int = 0) -> None:
        """The run is over: the last segments, and the log (written when anything was recorded, or the run
        received media or failed — what tells an empty recording from an encoder that connected and left)."""
        with self._lock:
            if self._closed:
                return
            self._sync()
            self._closed = True
            self.facts = {"encoder": encoder, "error": error, "frames_in": frames, "closed": True}
            if self.tracks or frames or error:
                self._write_log()


@dataclass(frozen=True)
class PublishedRecording:
    """A recording published as a VOD package: its tracks (video largest first), duration and encoder."""

    video: list[Track]
    audio: Track | None
    duration: Fraction
    encoder: str | None
    sections: int


def _check_uniform(sections: list[dict[str, Any]]) -> None:
    layouts = {tuple(sorted(name for name, track in section["tracks"].items() if track["segments"]))
               for section in sections}
    if len(layouts) > 1:
        raise UnsupportedMediaError(
            "the broadcast changed its tracks between connections (" + "; ".join(", ".join(names) for names in
                                                                                 sorted(layouts)) +
            "): a recording made of the live segments needs the same rungs and audio throughout")
    for name in {name for section in sections for name in section["tracks"]}:
        inits = {section["tracks"][name]["init"] for section in sections if name in section["tracks"]}
        if inits != {INIT_NAME}:
            changed = sorted(section["section"] for section in sections
                             if section["tracks"].get(name, {}).get("init", INIT_NAME) != INIT_NAME)
            raise UnsupportedMediaError(
                f"the broadcast changed its format between connections (track {name}, section "
                f"{', '.join(changed)}): a recording made of the live segments needs one format throughout")


def _track(store: ObjectStore, media: str, name: str, sections: list[dict[str, Any]]) -> tuple[Track, set[int]]:
    header = read_init(store.get_bytes(f"{media}/{name}/{INIT_NAME}"))
    segments: list[SegmentInfo] = []
    starts: set[int] = set()
    samples = 0
    for section in sections:
        logged = section["tracks"].get(name)
        if not logged or not logged["segments"]:
            continue
        starts.add(len(segments))
        for number, start, duration, count, size in logged["segments"]:
            segments.append(SegmentInfo(segment_file_name(number), start, duration, size))
            samples += count
    numbers = [int(segment.uri[4:-4]) for segment in segments]
    if numbers != list(range(1, len(numbers) + 1)):
        raise InvalidMediaError(f"the recorded segments of {name} are not numbered 1..{len(numbers)}")
    total = sum(segment.duration for segment in segments)
    rate = Fraction(samples * header.timescale, total).limit_denominator(1001) \
        if header.kind == "video" and total else None
    return Track(kind=header.kind, name=name, codec=header.codec, codec_string=header.codec_string,
                 timescale=header.timescale, segments=tuple(segments), width=header.width, height=header.height,
                 frame_rate=rate, channels=header.channels, sample_rate=header.sample_rate), starts


def publish_recording(store: ObjectStore, asset_id: str, segment_seconds: float = 4.0, *,
                      max_short_side: int | None = None) -> PublishedRecording:
    """Publish the recording of ``asset_id`` from its section logs (see the module docstring): the playlists,
    the MPD and ``master.m3u8`` (last), and ``highest.mp4`` (``audio.m4a`` without video). Idempotent.
    ``max_short_side``: rungs whose shorter side is larger are left out and their files deleted (the asset's
    ``max_resolution_tier``; the smallest rung stays whatever its size); ``segment_seconds``: the MPD's
    ``minBufferTime``.

    Raises:
        InvalidMediaError: no segment was recorded.
        UnsupportedMediaError: the sections differ in tracks or format.
        KinorayError: a file cannot be read, remuxed or stored.
    """
    from kinoray.media.static import join_track, remux_static

    sections = [section for section in recording_sections(store, asset_id)
                if any(track["segments"] for track in section["tracks"].values())]
    if not sections:
        errors = [section["error"] for section in recording_sections(store, asset_id) if section.get("error")]
        raise InvalidMediaError("the live transcoder wrote no segment" +
                                     (f": {errors[-1]}" if errors else ""))
    _check_uniform(sections)
    media = keys.media_prefix(asset_id)
    names = sorted({name for section in sections for name, track in section["tracks"].items() if track["segments"]})
    tracks = {name: _track(store, media, name, sections) for name in names}
    video = sorted((track for track, _ in tracks.values() if track.kind == "video"),
                   key=lambda track: track.width * track.height, reverse=True)
    if max_short_side is not None:
        above = [track for track in video[:-1] if min(track.width, track.height) > max_short_side]
        for track in above:
            store.delete_prefix(f"{media}/{track.name}")
            del tracks[track.name]
        video = video[len(above):]
    audio = next((track for track, _ in tracks.values() if track.kind == "audio"), None)
    duration = max(Fraction(segment.start + segment.duration, track.timescale)
                   for track, _ in tracks.values() for segment in track.segments[-1:])
    encoder = next((section.get("encoder") for section in reversed(sections) if section.get("encoder")), None)
    scratch = Path(tempfile.mkdtemp(prefix="kinoray-recording-"))
    try:
        static_name, static_tracks = ("highest.mp4", [video[0]]) if video else ("audio.m4a", [])
        static_tracks += [audio] if audio is not None else []
        local = [_local_track(store, media, track.name, scratch) for track in static_tracks]
        joined = [join_track(directory, scratch / f"{track.name}.mp4")
                  for directory, track in zip(local, static_tracks, strict=True)]
        remux_static(joined, scratch / static_name)
        store.put_file(scratch / static_name, f"{media}/{static_name}")
        for name, (track, starts) in tracks.items():
            store.put_bytes(hls_media_playlist(track, starts).encode(), f"{media}/{name}/{_PLAYLIST}")
        store.put_bytes(dash_mpd(video, audio, duration, Fraction(segment_seconds).limit_denominator(1000)).encode(),
                        f"{media}/{keys.MANIFEST_MPD}")
        store.put_bytes(hls_master_playlist(video, audio).encode(), f"{media}/master.m3u8")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return PublishedRecording(video, audio, duration, encoder, len(sections))


def _local_track(store: ObjectStore, media: str, name: str, scratch: Path) -> Path:
    """A track's directory on local disk: the store's own on a local store, else downloaded."""
    prefix = f"{media}/{name}"
    if store.is_local:
        return Path(store.path(prefix))
    local = scratch / "tracks" / name
    for key in store.list(prefix):
        file_name = key.rsplit("/", 1)[-1]
        if file_name == INIT_NAME or _SEGMENT.fullmatch(file_name):
            store.get_file(key, local / file_name)
    return local


def discard_logs(store: ObjectStore, asset_id: str) -> None:
    """Delete the section logs of a published (or failed) recording."""
    store.delete_prefix(keys.recording_prefix(asset_id))
