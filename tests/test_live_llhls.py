"""``latency_mode: low`` = LL-HLS (RFC 8216bis): kinoray's own packager (``kinoray.live.llhls``,
``kinoray.live.cmaf``) and the edge's blocking reloads, delta updates and preload-hinted parts.

End to end: a ``low`` live stream made through the API, Debian's ``ffmpeg`` publishing to the RTMP ingest, the
transcoder actor on a local Ray, everything read through the delivery edge. Judged independently: the ``m3u8``
package (PyPI) parses every playlist, plus strict checks of the tags written here from the RFC's rules;
``ffprobe`` counts the frames of init + parts against the whole segment; Debian's ``ffmpeg`` plays the live
playback id; Chromium with hls.js in ``lowLatencyMode`` plays it from parts with blocking reloads; the edge's
blocking reload is timed against the moment the part appears, and a stalled publisher gets the RFC's 503.

Without Ray or the edge: the playlist logic (blocking, too far ahead, delta updates) on hand-written playlists,
the edge's waiting holding no thread per waiting request, a replaced transcoder continuing the playlists after a
discontinuity, and the S3 mirror never publishing a playlist before the parts it lists (a reader of the bucket
checks while a ladder is mirrored).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import m3u8
import pytest
import requests

from kinoray.errors import InvalidParametersError
from kinoray.live.llhls import BlockingRequest, PlaylistState, delta_update
from tests.test_live_rtmp import publisher_command
from tests.test_playback_signed import mint

log = logging.getLogger(__name__)

FPS = 25
SEGMENT, PART = 1.0, 0.5
PUBLISH_SECONDS = 60


# --- the playlist logic, on hand-written playlists ---------------------------------------------------------------

def _playlist(segments: int, open_parts: int, *, ended: bool = False) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-TARGETDURATION:1",
             "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.0,PART-HOLD-BACK=1.560",
             "#EXT-X-PART-INF:PART-TARGET=0.520", "#EXT-X-MEDIA-SEQUENCE:5", '#EXT-X-MAP:URI="init.mp4"']
    for msn in range(5, 5 + segments):
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:{msn:02d}.000Z")
        lines += [f'#EXT-X-PART:DURATION=0.5,URI="part_{msn:05d}.{k}.m4s"' + (",INDEPENDENT=YES" if k == 0 else "")
                  for k in range(2)]
        lines += ["#EXTINF:1.00000,", f"seg_{msn:05d}.m4s"]
    msn = 5 + segments
    if open_parts:
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:{msn:02d}.000Z")
        lines += [f'#EXT-X-PART:DURATION=0.5,URI="part_{msn:05d}.{k}.m4s"' for k in range(open_parts)]
    lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part_{msn:05d}.{open_parts}.m4s"')
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def test_blocking_conditions_follow_rfc_8216bis() -> None:
    state = PlaylistState.parse(_playlist(10, 1))  # segments 5..14 complete, part 0 of 15 listed
    assert state.low_latency and state.last_msn == 14 and state.last_part == (15, 0)
    assert state.has(14, None) and not state.has(15, None)
    assert state.has(15, 0) and not state.has(15, 1)
    assert state.has(14, 5), "past a complete segment's last part: the next segment's first part, listed"
    assert not state.too_far(16, None) and state.too_far(17, None), "more than two segments ahead: 400"
    # Advance Part Limit: 3 / 0.52 s parts ≈ 5.8 parts past the last one (two parts to a segment here)
    assert not state.too_far(16, 3) and state.too_far(16, 4) and state.too_far(15, 6)
    ended = PlaylistState.parse(_playlist(3, 0, ended=True))
    assert ended.has(99, 0), "an ended playlist never blocks"
    assert BlockingRequest.from_query({"_HLS_msn": "15", "_HLS_part": "1", "_HLS_skip": "YES"}) == \
        BlockingRequest(15, 1, True)
    for query in ({"_HLS_part": "1"}, {"_HLS_msn": "-1"}, {"_HLS_msn": "x"}, {"_HLS_skip": "no"}):
        with pytest.raises(InvalidParametersError):
            BlockingRequest.from_query(query)


def test_a_delta_update_skips_what_is_older_than_can_skip_until() -> None:
    full = _playlist(10, 1)
    delta = delta_update(PlaylistState.parse(full))
    parsed, whole = m3u8.loads(delta), m3u8.loads(full)
    # 10.5 s listed, CAN-SKIP-UNTIL 6 s: the segments ending by 4.5 s (5..8) are skipped
    assert parsed.skip.skipped_segments == 4 and parsed.media_sequence == whole.media_sequence == 5
    assert [s.uri for s in parsed.segments] == [s.uri for s in whole.segments][4:]
    assert parsed.version >= 9 and '#EXT-X-MAP:URI="init.mp4"' in delta
    assert delta_update(PlaylistState.parse(_playlist(3, 0))) == _playlist(3, 0), "nothing old enough to skip"


def test_a_replaced_transcoders_init_has_a_name_of_its_own_that_the_edge_serves() -> None:
    from kinoray.control.playback import MEDIA_FILE_PATTERN
    from kinoray.live.llhls import next_init_name

    assert next_init_name(["init.mp4"]) == "init-1.mp4"
    assert next_init_name(["init.mp4", "init-1.mp4", "init-3.mp4"]) == "init-4.mp4"
    assert next_init_name(["init-2.mp4"]) == "init-3.mp4" and next_init_name(["other.mp4"]) == "init-1.mp4"
    assert all(MEDIA_FILE_PATTERN.fullmatch(name) for name in ("init.mp4", "init-1.mp4", "init-123456.mp4"))
    assert not any(MEDIA_FILE_PATTERN.fullmatch(name) for name in ("init-.mp4", "init-1.mp4.m3u8", "init-x.mp4",
                                                                   "../init-1.mp4", "init-1234567.mp4"))


def test_a_delta_update_past_a_replaced_transcoders_init_names_that_init() -> None:
    """A replaced transcoder's segments (from 7 on) decode with its ``init-1.mp4``: a delta update that skips
    the map change carries the map in force after the skip, and the full playlist parses with each segment's."""
    full = _playlist(10, 1).replace("#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:07",
                                    '#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI="init-1.mp4"\n'
                                    "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:07")
    state = PlaylistState.parse(full)
    assert [s.map_uri for s in state.segments] == ["init.mp4"] * 2 + ["init-1.mp4"] * 8
    parsed = m3u8.loads(delta_update(state))
    assert parsed.skip.skipped_segments == 4
    assert {s.init_section.uri for s in parsed.segments if s.uri} == {"init-1.mp4"}, delta_update(state)
    assert [s.init_section.uri for s in m3u8.loads(full).segments if s.uri] == \
        ["init.mp4"] * 2 + ["init-1.mp4"] * 8


def test_waiting_requests_hold_no_thread(tmp_path: Path) -> None:
    """500 blocked reloads on one playlist: one watcher task, no thread each; all answered once the part
    appears, and a wait that is never met ends at its timeout."""
    from kinoray.edge.live_wait import LivePlaylists
    from kinoray.store.objects import ObjectStore

    store = ObjectStore(str(tmp_path))
    store.put_bytes(_playlist(3, 0).encode(), "live/240p/index.m3u8")
    playlists = LivePlaylists(store, poll_seconds=0.01, max_waiting=1000)

    async def scenario() -> tuple[list[Any], int, float]:
        waits = [asyncio.ensure_future(playlists.wait("live/240p/index.m3u8", lambda s: s.has(8, 0), 10))
                 for _ in range(500)]
        await asyncio.sleep(0.2)
        threads = threading.active_count()
        assert playlists.waiting == 500 and not any(w.done() for w in waits)
        started = time.monotonic()
        await asyncio.to_thread(store.put_bytes, _playlist(3, 1).encode(), "live/240p/index.m3u8")
        done = await asyncio.gather(*waits)
        return done, threads, time.monotonic() - started

    before = threading.active_count()
    done, during, took = asyncio.run(scenario())
    assert during <= before + 1, "waiting holds no thread per request"
    assert all(state is not None and state.has(8, 0) for state in done) and took < 1.0
    assert playlists.waiting == 0
    started = time.monotonic()
    assert asyncio.run(playlists.wait("live/240p/index.m3u8", lambda s: s.has(50, 0), 0.3)) is None
    assert 0.25 < time.monotonic() - started < 2


def _transcode(flv: bytes, out: Path, *, resume: bool, speed: float | None = None, part: float | None = PART,
               passthrough: str = "off") -> Any:
    """The low-latency ladder of a recorded FLV: all at once, or its tags paced at ``speed`` × real time."""
    from kinoray.live.pipe import TagPipe
    from kinoray.live.transcode import LiveOptions, LiveTranscoder
    from tests.live_runtime import paced_pipe

    if speed is None:
        pipe = TagPipe()
        pipe.write(flv[13:])  # the pipe writes its own FLV header
        pipe.ended(None)
    else:
        pipe = paced_pipe(flv, speed)
    return LiveTranscoder(pipe, out, LiveOptions(segment_seconds=SEGMENT, part_seconds=part, heights=(240,),
                                                 encoder="libx264", preset="ultrafast",
                                                 source_passthrough=passthrough), resume=resume).run()


@pytest.mark.slow
@pytest.mark.parametrize("part", [PART, None], ids=["low", "plain"])
def test_a_replaced_transcoder_continues_the_playlists(tmp_path: Path, part: float | None) -> None:
    """What a transcoder actor started again (``resume``) does, LL-HLS or FFmpeg's HLS muxer: the playlists go on
    after the last segment with ``EXT-X-DISCONTINUITY``. The replacement decides differently (it passes the
    source's H.264 through where the first encoded it: another init segment), so it writes its init under a new
    name and its segments get an ``EXT-X-MAP`` of their own: each side decodes, every frame, with the init the
    playlist names for it, and the first side's init is untouched."""
    source = tmp_path / "source.flv"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FPS}", "-f", "lavfi",
                    "-i", "sine=frequency=440:sample_rate=48000", "-t", "3", "-c:v", "libx264", "-g", str(FPS),
                    "-c:a", "aac", "-f", "flv", str(source)], check=True, timeout=120)
    out = tmp_path / "live"
    first = _transcode(source.read_bytes(), out, resume=False, part=part)
    assert first.error is None and first.frames_in == 3 * FPS and first.passthrough is None
    before = m3u8.loads((out / "240p" / "index.m3u8").read_text())
    first_init = (out / "240p" / "init.mp4").read_bytes()
    second = _transcode(source.read_bytes(), out, resume=True, part=part, passthrough="auto")
    assert second.error is None and second.passthrough == "240p"
    text = (out / "240p" / "index.m3u8").read_text()
    after = m3u8.loads(text)
    old = [s.uri for s in before.segments]
    new = [s.uri for s in after.segments]
    assert new[:len(old)] == old and len(new) > len(old) and after.media_sequence == before.media_sequence
    assert after.segments[len(old)].discontinuity and not any(s.discontinuity for s in after.segments[:len(old)])
    assert text.rstrip().endswith("#EXT-X-ENDLIST") and text.count("#EXT-X-PROGRAM-DATE-TIME") == len(new)
    assert (out / "240p" / "init.mp4").read_bytes() == first_init
    maps = [segment.init_section.uri for segment in after.segments]
    assert maps == ["init.mp4"] * len(old) + ["init-1.mp4"] * (len(new) - len(old)), maps
    assert (out / "240p" / "init-1.mp4").read_bytes() != first_init
    # the audio's replacement too (its init the same bytes: a new name all the same, one per transcoder)
    audio = m3u8.loads((out / "audio" / "index.m3u8").read_text())
    assert {segment.init_section.uri for segment in audio.segments} == {"init.mp4", "init-1.mp4"}
    for side, init_name in ((new[:len(old)], "init.mp4"), (new[len(old):], "init-1.mp4")):
        # each transcoder's segments, with the init the playlist names for them: its 3 s, every frame
        joined = tmp_path / "side.mp4"
        joined.write_bytes((out / "240p" / init_name).read_bytes() +
                           b"".join((out / "240p" / name).read_bytes() for name in side))
        probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries",
                                "stream=nb_read_frames", "-of", "csv=p=0", str(joined)],
                               capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0 and int(probe.stdout.split()[0]) == 3 * FPS, probe.stderr


@pytest.mark.slow
def test_the_s3_mirror_never_lists_a_part_before_it_is_uploaded(s3_bucket: str, tmp_path: Path) -> None:
    """A low-latency ladder rewrites its playlists several times a second while the mirror copies the directory
    to S3; a reader of the bucket polling meanwhile never finds a playlist naming a part or segment that is not
    there yet, and at the end the bucket holds what the directory holds."""
    import s3fs

    from kinoray.live.mirror import DirectoryMirror
    from kinoray.store.objects import ObjectStore

    source = tmp_path / "source.flv"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FPS}", "-f", "lavfi",
                    "-i", "sine=frequency=440:sample_rate=48000", "-t", "6", "-c:v", "libx264", "-g", str(FPS),
                    "-c:a", "aac", "-f", "flv", str(source)], check=True, timeout=120)
    store = ObjectStore(f"s3://{s3_bucket}/storage")
    out = tmp_path / "live"
    out.mkdir()
    mirror = DirectoryMirror(out, store, "live/x", interval=0.01)
    stop, done = threading.Event(), threading.Event()
    missing: list[str] = []
    checked = [0]

    # the viewer's own client, no listing cache (the mirror's s3fs instance caches listings as it works)
    viewer = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["KINORAY_STORAGE__S3_ENDPOINT_URL"]},
                               use_listings_cache=False, skip_instance_cache=True)

    def listing(rung: str) -> set[str]:
        return {key.rsplit("/", 1)[-1] for key in viewer.find(f"{s3_bucket}/storage/live/x/{rung}")}

    def read_like_a_viewer() -> None:
        while not done.is_set():
            for rung in ("240p", "audio"):
                before = listing(rung)  # a file listed may be deleted (out of the window) after the read …
                try:
                    text = viewer.cat_file(f"{s3_bucket}/storage/live/x/{rung}/index.m3u8").decode()
                except FileNotFoundError:  # not uploaded yet
                    continue
                present = before | listing(rung)  # … or uploaded only just before it
                names = re.findall(r'URI="([^"]+\.m4s)"', text.split("#EXT-X-PRELOAD-HINT")[0])
                names += [line for line in text.splitlines() if line.endswith(".m4s") and not line.startswith("#")]
                missing.extend(f"{rung}/{name}" for name in names if name not in present)
                checked[0] += 1

    threads = [threading.Thread(target=mirror.run, args=(stop,)), threading.Thread(target=read_like_a_viewer)]
    for thread in threads:
        thread.start()
    try:
        result = _transcode(source.read_bytes(), out, resume=False, speed=2.0)  # twice real time: a busy mirror
    finally:
        stop.set()
        threads[0].join(60)
        done.set()
        threads[1].join(60)
    assert result.error is None and checked[0] > 10 and missing == [], (checked, missing[:5])
    local = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    store.fs.invalidate_cache()
    remote = {key.split("live/x/", 1)[1] for key in store.list("live/x")}
    assert local == remote


# --- end to end: a low-latency stream through the edge ------------------------------------------------------------

@pytest.fixture(scope="module")
def api(api_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.live_runtime import live_api

    with live_api(api_backend, tmp_path_factory.mktemp("live-llhls"),
                  live={"segment_seconds": {"low": SEGMENT}, "part_seconds": PART}) as server:
        yield server


class LowStream:
    def __init__(self, api: Any, ingest: Any) -> None:
        self.api = api
        created = api.client.post(f"{api.url}/video/v1/live-streams", json={
            "playback_policies": ["public"], "latency_mode": "low"}, timeout=30)
        assert created.status_code == 201, created.text
        stream = created.json()["data"]
        self.id, self.public_id = stream["id"], stream["playback_ids"][0]["id"]
        signed = api.client.post(f"{api.url}/video/v1/live-streams/{self.id}/playback-ids",
                                 json={"policy": "signed"}, timeout=10)
        assert signed.status_code == 201, signed.text
        self.signed_id = signed.json()["data"]["id"]
        key = api.client.post(f"{api.url}/system/v1/signing-keys", timeout=10).json()["data"]
        self.token = mint(key["id"], base64.b64decode(key["private_key"]), self.signed_id)
        self.published_at = time.time()
        self.publisher = subprocess.Popen(
            publisher_command(ingest.port, stream["stream_key"], seconds=PUBLISH_SECONDS, app="app",
                              size="426x240", fps=FPS), stderr=subprocess.PIPE, text=True)
        self.base = f"{api.edge_url}/{self.public_id}"
        deadline = time.monotonic() + 60
        while requests.get(f"{self.base}/240p/index.m3u8", timeout=10).status_code != 200:
            assert self.publisher.poll() is None, self.publisher.stderr.read() if self.publisher.stderr else ""
            assert time.monotonic() < deadline, "the low-latency stream never became playable"
            time.sleep(0.1)
        while "#EXTINF" not in (text := self.playlist().text):
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        first = m3u8.loads(text).segments[0]
        assert m3u8.loads(text).media_sequence == 1 and first.program_date_time is not None
        #: the wall clock of media time 0 as the playlists say (EXT-X-PROGRAM-DATE-TIME of segment 1)
        self.first_date = first.program_date_time.timestamp()

    def playlist(self, rung: str = "240p", **query: Any) -> requests.Response:
        return requests.get(f"{self.base}/{rung}/index.m3u8", params=query, timeout=30)

    def close(self) -> None:
        if self.publisher.poll() is None:
            self.publisher.terminate()
        self.publisher.wait(30)


@pytest.fixture(scope="module")
def low(api: Any) -> Iterator[LowStream]:
    from tests.live_runtime import live_ingest

    with live_ingest(api) as ingest:
        stream = LowStream(api, ingest)
        try:
            yield stream
        finally:
            stream.close()


def _attributes(line: str) -> dict[str, str]:
    return {name: value.strip('"') for name, value in re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', line)}


def _strict_checks(text: str) -> dict[str, float]:
    """RFC 8216bis's rules for a live LL-HLS media playlist, checked line by line (independent of kinoray's
    parser): the numbers a caller may want back."""
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    tags = {line.split(":", 1)[0]: line.split(":", 1)[1] if ":" in line else "" for line in lines
            if line.startswith("#")}
    assert int(tags["#EXT-X-VERSION"]) >= 9
    target = int(tags["#EXT-X-TARGETDURATION"])
    part_target = float(_attributes(tags["#EXT-X-PART-INF"])["PART-TARGET"])
    control = _attributes(tags["#EXT-X-SERVER-CONTROL"])
    assert control["CAN-BLOCK-RELOAD"] == "YES"
    assert float(control["PART-HOLD-BACK"]) >= 3 * part_target - 1e-6, "PART-HOLD-BACK: at least 3 part targets"
    assert float(control["CAN-SKIP-UNTIL"]) >= 6 * target, "CAN-SKIP-UNTIL: at least 6 target durations"
    assert "#EXT-X-ENDLIST" not in tags and "#EXT-X-MAP" in tags
    hints = [line for line in lines if line.startswith("#EXT-X-PRELOAD-HINT:")]
    assert len(hints) == 1 and _attributes(hints[0])["TYPE"] == "PART"
    segments = parts_seen = 0
    parts: list[dict[str, str]] = []
    dated = False
    for line in lines:
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            dated = True
        elif line.startswith("#EXT-X-PART:"):
            part = _attributes(line.split(":", 1)[1])
            assert float(part["DURATION"]) <= part_target + 1e-9, line
            parts.append(part)
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].split(",")[0])
            assert round(duration) <= target, line
            if parts:
                assert abs(sum(float(p["DURATION"]) for p in parts) - duration) < 0.002, "parts make the segment"
                assert parts[0].get("INDEPENDENT") == "YES", "a segment's first part starts with an IDR"
                assert all(float(p["DURATION"]) >= 0.85 * part_target for p in parts[:-1]), \
                    f"RFC: ≥ 85 %: {parts}"
                parts_seen += len(parts)
        elif line and not line.startswith("#"):
            assert dated, f"EXT-X-PROGRAM-DATE-TIME before every segment ({line})"
            segments += 1
            parts, dated = [], False
    assert parts_seen > 0, "recent segments list their parts"
    return {"target": target, "part_target": part_target, "segments": segments,
            "part_hold_back": float(control["PART-HOLD-BACK"])}


def _next_part(text: str) -> tuple[int, int, str]:
    hint = _attributes(next(line for line in text.splitlines() if line.startswith("#EXT-X-PRELOAD-HINT:")))
    match = re.fullmatch(r"part_(\d+)\.(\d+)\.m4s(?:\?.*)?", hint["URI"])
    assert match is not None, hint
    return int(match[1]), int(match[2]), hint["URI"]


@pytest.mark.slow
def test_the_media_playlist_is_ll_hls(low: LowStream) -> None:
    answer = low.playlist()
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "public, max-age=1"
    deadline = time.monotonic() + 30
    while "#EXT-X-PART:" not in (text := low.playlist().text) or text.count("#EXTINF") < 2:
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    facts = _strict_checks(text)
    parsed = m3u8.loads(text)
    assert parsed.server_control.can_block_reload == "YES" and parsed.part_inf.part_target == facts["part_target"]
    assert parsed.preload_hint.hint_type == "PART" and parsed.preload_hint.uri.startswith("part_")
    assert parsed.segment_map[0].uri == "init.mp4"
    complete = [segment for segment in parsed.segments if segment.uri]
    assert complete and all(segment.program_date_time is not None for segment in complete)
    listed = [part for segment in parsed.segments for part in segment.parts]
    assert listed and all(part.uri.startswith("part_") for part in listed)
    [report] = parsed.rendition_reports  # the other media playlist of the stream: its audio
    assert report.uri == "../audio/index.m3u8" and report.last_msn >= parsed.media_sequence
    audio = low.playlist("audio").text
    _strict_checks(audio)
    assert all(_attributes(line).get("INDEPENDENT") == "YES" for line in audio.splitlines()
               if line.startswith("#EXT-X-PART:")), "every AAC part is independent"
    part = requests.get(f"{low.base}/240p/{listed[-1].uri}", timeout=10)
    assert part.status_code == 200 and "immutable" in part.headers["Cache-Control"]
    assert part.content[4:8] == b"moof" and part.headers["Content-Type"] == "video/iso.segment"


@pytest.mark.slow
def test_a_blocking_reload_returns_once_the_part_exists(low: LowStream) -> None:
    text = low.playlist().text
    msn, part, uri = _next_part(text)
    assert not any(uri in line for line in text.splitlines() if line.startswith("#EXT-X-PART:"))
    started = time.monotonic()
    hinted = requests.get(f"{low.base}/240p/{uri}", timeout=30)  # the hinted part, not written yet, is held …
    assert hinted.status_code == 200 and hinted.content[4:8] == b"moof", hinted.text
    log.info("preload-hinted part answered after %.3f s", time.monotonic() - started)
    # … and the blocking reload asked for the part after it waits for that one
    text = low.playlist().text
    msn, part, uri = _next_part(text)
    started = time.monotonic()
    answer = low.playlist(_HLS_msn=msn, _HLS_part=part)
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert f'URI="{uri}"' in answer.text, "the answer lists the part it was asked for"
    assert requests.get(f"{low.base}/240p/{uri}", timeout=10).status_code == 200
    assert 0.02 < took < 3 * 1.0, f"held until the part appeared (at most 3 target durations): {took:.3f} s"
    state = PlaylistState.parse(answer.text)
    assert state.has(msn, part)


@pytest.mark.slow
def test_too_far_ahead_and_malformed_directives_are_400(low: LowStream) -> None:
    state = PlaylistState.parse(low.playlist().text)
    started = time.monotonic()
    far = low.playlist(_HLS_msn=state.last_msn + 3)
    assert far.status_code == 400 and far.json()["error"]["type"] == "invalid_parameters"
    assert time.monotonic() - started < 1.0, "answered at once, not held"
    assert low.playlist(_HLS_msn=state.last_msn + 1, _HLS_part=20).status_code == 400
    assert low.playlist(_HLS_part=1).status_code == 400
    assert low.playlist(_HLS_msn="one").status_code == 400
    behind = low.playlist(_HLS_msn=state.last_msn)
    assert behind.status_code == 200, "a segment already listed answers at once"


@pytest.mark.slow
def test_a_delta_update_is_a_valid_playlist(low: LowStream) -> None:
    deadline = time.monotonic() + 40
    while True:  # CAN-SKIP-UNTIL is 6 target durations: wait until something is that old
        full = low.playlist().text
        delta = low.playlist(_HLS_skip="YES").text
        if "#EXT-X-SKIP:" in delta:
            break
        assert time.monotonic() < deadline, delta
        time.sleep(0.5)
    parsed = m3u8.loads(delta)
    assert parsed.skip.skipped_segments >= 1 and parsed.version >= 9
    assert parsed.preload_hint is not None and parsed.server_control.can_block_reload == "YES"
    # the delta's segments are the full playlist's last ones (the later of the two reads may have one more)
    whole = m3u8.loads(full)
    first_listed = parsed.media_sequence + parsed.skip.skipped_segments
    full_uris = [s.uri for s in whole.segments if s.uri]
    delta_uris = [s.uri for s in parsed.segments if s.uri]
    assert delta_uris[0] == f"seg_{first_listed:05d}.m4s"
    assert full_uris[full_uris.index(delta_uris[0]):] == delta_uris[:len(full_uris) - full_uris.index(delta_uris[0])]
    kept = sum(s.duration for s in parsed.segments if s.uri)
    assert kept >= parsed.server_control.can_skip_until - 1.0, "nothing within CAN-SKIP-UNTIL is skipped"
    blocking_delta = low.playlist(_HLS_skip="YES", _HLS_msn=parsed.media_sequence)
    assert blocking_delta.status_code == 200 and "#EXT-X-SKIP:" in blocking_delta.text


@pytest.mark.slow
def test_init_and_parts_decode_to_the_segment(low: LowStream, tmp_path: Path) -> None:
    parsed = m3u8.loads(low.playlist().text)
    segment = next(s for s in reversed(parsed.segments) if s.uri and len(s.parts) >= 2)
    init = requests.get(f"{low.base}/240p/init.mp4", timeout=10).content
    parts = b"".join(requests.get(f"{low.base}/240p/{p.uri}", timeout=10).content for p in segment.parts)
    whole = requests.get(f"{low.base}/240p/{segment.uri}", timeout=10).content
    (tmp_path / "parts.mp4").write_bytes(init + parts)
    (tmp_path / "segment.mp4").write_bytes(init + whole)
    counts = {}
    for name in ("parts.mp4", "segment.mp4"):
        done = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v",
                               "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and not done.stderr, done.stderr
        counts[name] = int(done.stdout.split()[0])
    expected = round(segment.duration * FPS)
    assert counts["parts.mp4"] == counts["segment.mp4"] == expected, (counts, segment.duration)
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "parts.mp4"), "-f", "null", "-"],
                             capture_output=True, text=True, timeout=60)
    assert decoded.returncode == 0 and not decoded.stderr, decoded.stderr


@pytest.mark.slow
def test_signed_ids_carry_the_token_on_parts_and_hints(low: LowStream) -> None:
    base = f"{low.api.edge_url}/{low.signed_id}"
    assert requests.get(f"{base}/240p/index.m3u8", timeout=10).status_code == 403
    answer = requests.get(f"{base}/240p/index.m3u8", params={"token": low.token}, timeout=10)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "private, no-store"
    uris = re.findall(r'URI="([^"]+)"', answer.text) + [line for line in answer.text.splitlines()
                                                         if line and not line.startswith("#")]
    kinds = {re.sub(r"[_0-9.]+", "", uri.split("?")[0].rsplit("/", 1)[-1]) for uri in uris}
    assert {"partms", "initmp", "segms", "indexmu"} <= kinds, kinds  # parts, hint, map, segments, reports
    assert all(uri.endswith(f"?token={low.token}") for uri in uris), uris
    part = next(uri for uri in uris if uri.startswith("part_"))
    assert requests.get(f"{base}/240p/{part}", timeout=10).status_code == 200
    assert requests.get(f"{base}/240p/{part.split('?')[0]}", timeout=10).status_code == 403


@pytest.mark.slow
def test_ffmpeg_plays_the_low_latency_stream(low: LowStream) -> None:
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", f"{low.base}.m3u8", "-t", "3", "-map", "0:v",
                           "-f", "framemd5", "-"], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    frames = [line for line in done.stdout.splitlines() if line and not line.startswith("#")]
    assert len(frames) >= 3 * FPS - 2, len(frames)


@pytest.mark.slow
def test_latency_from_publish_to_the_newest_part(low: LowStream) -> None:
    """The newest part's end (its segment's EXT-X-PROGRAM-DATE-TIME plus the parts before it) against the wall
    clock the moment a blocking reload delivers it: what kinoray adds after the publisher sent the frame (the
    dates are the publisher's clock as the ingest saw it); and the same media time against the publisher's own
    start (``ffmpeg -re`` sends media time t at its start + t), which adds ffmpeg's start-up and the RTMP
    handshake — glass-to-glass less the player's hold-back and the network."""
    delays, from_publisher = [], []
    for _ in range(8):
        msn, part, _ = _next_part(low.playlist().text)
        answer = low.playlist(_HLS_msn=msn, _HLS_part=part)
        now = time.time()
        assert answer.status_code == 200
        state = PlaylistState.parse(answer.text)
        lines = answer.text.splitlines()
        # the open segment's date and parts (or, at a boundary, the last complete segment's)
        dates = [i for i, line in enumerate(lines) if line.startswith("#EXT-X-PROGRAM-DATE-TIME:")]
        start = datetime.fromisoformat(lines[dates[-1]].split(":", 1)[1].replace("Z", "+00:00")).timestamp()
        listed = sum(float(_attributes(line)["DURATION"]) for line in lines[dates[-1]:]
                     if line.startswith("#EXT-X-PART:"))
        delays.append(now - (start + listed))
        from_publisher.append(now - (low.published_at + start + listed - low.first_date))
        assert state.has(msn, part)
    delays.sort()
    from_publisher.sort()
    median, publisher_median = delays[len(delays) // 2], from_publisher[len(from_publisher) // 2]
    log.info("LL-HLS newest part out %.2f s after its date (median of %d; min %.2f, max %.2f); %.2f s after the "
             "publisher's clock", median, len(delays), delays[0], delays[-1], publisher_median)
    # the dates are an estimate of the publisher's clock (TagPipe.clock, fixed when the first frame is dated):
    # the one rung here is the publisher's own H.264 passed through (live.source_passthrough), which adds no
    # encode, so a part can be listed within that estimate's jitter of when its last frame was "sent"
    assert -0.1 <= delays[0] and median <= 3.0, (delays, from_publisher)
    assert publisher_median <= 3.0, from_publisher


LOW_LATENCY_PAGE = """<!doctype html><html><body><video id="v" muted></video><script src="/hls.js"></script><script>
  window.parts = 0; window.segments = 0; window.fatal = [];
  const video = document.getElementById('v');
  const hls = window.hls = new Hls({lowLatencyMode: true});
  hls.on(Hls.Events.FRAG_LOADED, (event, data) => { if (data.part) window.parts++; else window.segments++; });
  hls.on(Hls.Events.ERROR, (event, data) => { if (data.fatal) window.fatal.push(data.details); });
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play());
  hls.loadSource('SOURCE'); hls.attachMedia(video);
</script></body></html>"""


@pytest.mark.slow
@pytest.mark.browser
def test_hls_js_plays_the_low_latency_stream_from_parts(low: LowStream) -> None:
    """Chromium with the vendored hls.js in ``lowLatencyMode``: it reads the playlist as LL-HLS (parts, blocking
    reloads), plays from parts, and the picture it shows is a few seconds behind the publisher (``Date.now()``
    against ``hls.playingDate``, the EXT-X-PROGRAM-DATE-TIME of the frame on screen)."""
    from kinoray.player.assets import STATIC_DIR
    from tests.browser import chromium
    from tests.js_clients import PageServer

    pages = PageServer({"/hls.js": STATIC_DIR / "hls.min.js"})
    asked: list[str] = []
    try:
        with chromium() as browser:
            page = browser.new_page()
            page.on("request", lambda request: asked.append(request.url))
            page.goto(pages.put(LOW_LATENCY_PAGE.replace("SOURCE", f"{low.base}.m3u8")))
            page.wait_for_function("document.getElementById('v').currentTime > 4 && window.parts > 8",
                                   timeout=60_000)
            samples = []
            for _ in range(5):
                samples.append(page.evaluate("Date.now() / 1000 - window.hls.playingDate.getTime() / 1000"))
                page.wait_for_timeout(500)
            facts = page.evaluate("""() => { const d = window.hls.levels[window.hls.currentLevel].details;
                return {partTarget: d.partTarget, canBlock: d.canBlockReload, fatal: window.fatal,
                        parts: window.parts, latency: window.hls.latency,
                        target: window.hls.targetLatency}; }""")
    finally:
        pages.shutdown()
        pages.server_close()
    assert facts["fatal"] == [] and facts["canBlock"] is True and facts["partTarget"] > 0, facts
    assert any("_HLS_msn=" in url and "_HLS_part=" in url for url in asked), "hls.js made blocking reloads"
    assert any(re.search(r"/part_\d+\.\d+\.m4s", url) for url in asked), "hls.js loaded parts"
    samples.sort()
    behind = samples[len(samples) // 2]
    log.info("hls.js lowLatencyMode: %.2f s behind the publisher's clock (hls.js latency %.2f s, target %.2f s)",
             behind, facts["latency"], facts["target"])
    assert 0 < behind <= 4.0, (samples, facts)


@pytest.mark.slow
def test_a_stalled_stream_answers_503_after_three_target_durations(low: LowStream) -> None:
    """The publisher stopped (SIGSTOP): a blocking reload for the next part is held three target durations,
    then answered 503 with Retry-After (RFC 8216bis), and the hinted part that never comes is a 404 after the
    same wait. Runs last: the publisher is resumed, but the stream has a gap."""
    os.kill(low.publisher.pid, signal.SIGSTOP)
    try:
        deadline, text = time.monotonic() + 20, low.playlist().text
        while True:  # until the transcoder has written what it had: the playlist stops changing
            time.sleep(1.0)
            now = low.playlist().text
            if now == text:
                break
            assert time.monotonic() < deadline, "the playlist kept changing with the publisher stopped"
            text = now
        target = PlaylistState.parse(text).target_duration
        msn, part, uri = _next_part(text)
        started = time.monotonic()
        answer = low.playlist(_HLS_msn=msn, _HLS_part=part)
        took = time.monotonic() - started
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1", answer.text
        assert answer.json()["error"]["type"] == "service_unavailable"
        assert 3 * target - 0.1 <= took <= 3 * target + 2.0, took
        assert requests.get(f"{low.base}/240p/{uri}", timeout=30).status_code == 404
    finally:
        os.kill(low.publisher.pid, signal.SIGCONT)
