"""Playback delivery over real HTTP: HLS/DASH manifests (parsed with ``m3u8``/``mpegdash``, played by Debian's
ffmpeg), segments and static MP4s with byte ranges, validators, caching and CORS, and the error cases, on SQLite
and PostgreSQL. One transcoded asset per test session, copied into each server's storage.

Also the pure parts (manifest rewriting, range parsing, modifiers) without a server.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import m3u8
import mpegdash.parser
import pytest
import requests

from kinoray.control import playback as delivery
from kinoray.media.manifest_rewrite import (
    RenditionFilter,
    rewrite_dash_mpd,
    rewrite_hls_master,
    rewrite_hls_media,
)
from kinoray.store.models import (
    Asset,
    AssetStatus,
    PlaybackId,
    PlaybackPolicy,
    StaticRendition,
    StaticRenditionStatus,
    new_id,
)
from tests.api_server import eventually
from tests.media import MediaSpec, make_media

SOURCE = MediaSpec(name="playback", width=854, height=480, duration_s=Fraction(6))
AUDIO_ONLY = MediaSpec(name="playback_audio", video_codec=None, duration_s=Fraction(3))
LADDER = (480, 240)
IMMUTABLE = "public, max-age=31536000, immutable"

_packaged: dict[str, tuple[Path, Path]] = {}


def packaged_asset(media_dir: Path, work: Path) -> tuple[Path, Path]:
    """``(source clip, packaged media directory)``, transcoded once per process (also for the signed module)."""
    if "asset" not in _packaged:
        from kinoray.media.pipeline import TranscodeOptions, transcode_file

        source = make_media(SOURCE, media_dir)
        out = work / "media"
        transcode_file(str(source), out, TranscodeOptions(ladder=LADDER, chunk_seconds=6, segment_seconds=2))
        _packaged["asset"] = (source, out)
    return _packaged["asset"]


def packaged_audio_only(media_dir: Path, work: Path) -> Path:
    """An audio-only asset's packaged media directory (has ``audio.m4a`` instead of ``highest.mp4``)."""
    if "audio" not in _packaged:
        from kinoray.media.pipeline import TranscodeOptions, transcode_file

        source = make_media(AUDIO_ONLY, media_dir)
        out = work / "audio-media"
        transcode_file(str(source), out, TranscodeOptions(segment_seconds=2))
        _packaged["audio"] = (source, out)
    return _packaged["audio"][1]


def publish(server, media: Path | None, *, status: AssetStatus = AssetStatus.READY,
            policies: tuple[PlaybackPolicy, ...] = (PlaybackPolicy.PUBLIC,)) -> tuple[str, list[str]]:
    """An asset row in ``status`` whose media is a copy of ``media``, with one playback id per policy and a
    ready static rendition for each of ``highest.mp4``/``audio.m4a`` the media holds."""
    asset_id = new_id()
    if media is not None:
        shutil.copytree(media, Path(server.settings.storage_url) / "assets" / asset_id / "media")
    playback_ids = [new_id() for _ in policies]
    with server.platform.db.session() as session:
        session.add(Asset(id=asset_id, status=status, storage_prefix=f"assets/{asset_id}"))
        session.flush()
        for name, resolution in (("highest.mp4", "highest"), ("audio.m4a", "audio-only")):
            if media is not None and (media / name).exists():
                session.add(StaticRendition(asset_id=asset_id, name=name, resolution=resolution,
                                            status=StaticRenditionStatus.READY))
        for playback_id, policy in zip(playback_ids, policies, strict=True):
            session.add(PlaybackId(id=playback_id, asset_id=asset_id, policy=policy))
    return asset_id, playback_ids


def frame_count(url: str) -> int:
    """Video frames Debian's ffprobe decodes from ``url`` (first video stream)."""
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                           "stream=nb_read_frames", "-of", "csv=p=0", url],
                          capture_output=True, text=True, timeout=120, check=True)
    counts = [int(line) for line in done.stdout.split() if line.strip().isdigit()]
    assert counts, done.stdout + done.stderr
    return counts[0]


def ffmpeg_decodes(url: str) -> None:
    done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", url, "-f", "null", "-"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def assert_error(answer: requests.Response, status: int, error_type: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["type"] == error_type
    assert answer.json()["error"]["messages"]
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert answer.headers["Cache-Control"] == "no-store"


@pytest.fixture(scope="module")
def ready(api, media_dir, tmp_path_factory):
    """``(server, source, media dir, asset id, public playback id)``."""
    source, media = packaged_asset(media_dir, tmp_path_factory.getbasetemp())
    asset_id, (playback_id,) = publish(api, media)
    return api, source, media, asset_id, playback_id


# --- HLS --------------------------------------------------------------------------------------------------------


def test_hls_master_and_everything_it_lists_resolve(ready) -> None:
    server, _, media, _, playback_id = ready
    master_url = f"{server.edge_url}/{playback_id}.m3u8"
    answer = requests.get(master_url, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert answer.headers["Cache-Control"] == "public, max-age=5"
    master = m3u8.loads(answer.text, uri=master_url)
    assert master.is_variant
    assert [p.stream_info.resolution[1] for p in master.playlists] == [240, 480]  # ascending by default
    audio = [m for m in master.media if m.type == "AUDIO"]
    assert len(audio) == 1 and all(p.stream_info.audio == audio[0].group_id for p in master.playlists)
    playlist_urls = [urljoin(master_url, p.uri) for p in master.playlists] + [urljoin(master_url, audio[0].uri)]
    assert [urlsplit(u).path for u in playlist_urls] == [
        f"/{playback_id}/240p/index.m3u8", f"/{playback_id}/480p/index.m3u8", f"/{playback_id}/audio/index.m3u8"]
    for playlist_url in playlist_urls:
        answer = requests.get(playlist_url, timeout=10)
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/vnd.apple.mpegurl"
        playlist = m3u8.loads(answer.text, uri=playlist_url)
        assert playlist.is_endlist and playlist.segments
        rung = urlsplit(playlist_url).path.split("/")[2]
        file_urls = [urljoin(playlist_url, playlist.segment_map[0].uri)]
        file_urls += [urljoin(playlist_url, segment.uri) for segment in playlist.segments]
        for file_url in file_urls:
            answer = requests.get(file_url, timeout=10)
            assert answer.status_code == 200, file_url
            name = urlsplit(file_url).path.rsplit("/", 1)[-1]
            assert answer.content == (media / rung / name).read_bytes()
            expected_type = "audio/mp4" if rung == "audio" else (
                "video/mp4" if name == "init.mp4" else "video/iso.segment")
            assert answer.headers["Content-Type"] == expected_type
            assert answer.headers["Cache-Control"] == IMMUTABLE
            assert answer.headers["Accept-Ranges"] == "bytes"


def test_ffmpeg_plays_hls_and_dash_with_every_frame(ready) -> None:
    server, source, _, _, playback_id = ready
    expected = frame_count(str(source))
    assert expected == SOURCE.expected_video_frames
    for url in (f"{server.edge_url}/{playback_id}.m3u8", f"{server.edge_url}/{playback_id}.mpd"):
        ffmpeg_decodes(url)
        assert frame_count(url) == expected, url


def test_modifiers_filter_and_order_variants(ready) -> None:
    server, _, _, _, playback_id = ready
    url = f"{server.edge_url}/{playback_id}.m3u8"

    def heights(**query: str) -> list[int]:
        answer = requests.get(url, params=query, timeout=10)
        assert answer.status_code == 200, answer.text
        playlist = m3u8.loads(answer.text)
        assert len([m for m in playlist.media if m.type == "AUDIO"]) == 1  # the audio group stays
        return [p.stream_info.resolution[1] for p in playlist.playlists]

    assert heights() == [240, 480]
    assert heights(rendition_order="desc") == [480, 240]
    assert heights(min_resolution="480p") == [480]
    assert heights(max_resolution="720p", rendition_order="desc") == [480, 240]
    assert heights(min_resolution="720p") == [480]  # nothing that large: the nearest rung, never an empty manifest
    assert heights(unknown="x", token="ignored-for-public-ids") == [240, 480]
    for bad in ({"max_resolution": "1000p"}, {"min_resolution": "240p"}, {"rendition_order": "asc"},
                {"min_resolution": "1080p", "max_resolution": "720p"}):
        assert_error(requests.get(url, params=bad, timeout=10), 400, "invalid_parameters")

    mpd_url = f"{server.edge_url}/{playback_id}.mpd"
    mpd = mpegdash.parser.MPEGDASHParser.parse(requests.get(mpd_url, params={"min_resolution": "480p"}, timeout=10).text)
    video = [a for a in mpd.periods[0].adaptation_sets if a.content_type == "video"][0]
    assert [r.height for r in video.representations] == [480]


def test_media_playlists_and_head(ready) -> None:
    server, _, _, _, playback_id = ready
    for path in (f"/{playback_id}.m3u8", f"/{playback_id}.mpd", f"/{playback_id}/480p/index.m3u8",
                 f"/{playback_id}/480p/seg_00001.m4s", f"/{playback_id}/highest.mp4"):
        got = requests.get(server.edge_url + path, timeout=10)
        head = requests.head(server.edge_url + path, timeout=10)
        assert got.status_code == head.status_code == 200, path
        assert head.content == b""
        assert head.headers["Content-Length"] == got.headers["Content-Length"] == str(len(got.content))
        for name in ("Content-Type", "ETag", "Cache-Control", "Access-Control-Allow-Origin"):
            assert head.headers[name] == got.headers[name], (path, name)


# --- DASH -------------------------------------------------------------------------------------------------------


def test_dash_mpd_parses_and_its_segments_resolve(ready) -> None:
    server, _, media, _, playback_id = ready
    mpd_url = f"{server.edge_url}/{playback_id}.mpd"
    answer = requests.get(mpd_url, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/dash+xml"
    mpd = mpegdash.parser.MPEGDASHParser.parse(answer.text)
    fetched = 0
    for adaptation in mpd.periods[0].adaptation_sets:
        for representation in adaptation.representations:
            template = representation.segment_templates[0]
            timeline = template.segment_timelines[0].Ss
            count = sum(1 + (s.r or 0) for s in timeline)
            urls = [urljoin(mpd_url, template.initialization)]
            urls += [urljoin(mpd_url, template.media.replace("$Number%05d$", f"{template.start_number + n:05d}"))
                     for n in range(count)]
            for url in urls:
                got = requests.get(url, timeout=10)
                assert got.status_code == 200, url
                rung, name = urlsplit(url).path.split("/")[2:]
                assert got.content == (media / rung / name).read_bytes()
                fetched += 1
    assert fetched == sum(1 for _ in media.rglob("*.m4s")) + sum(1 for _ in media.rglob("init.mp4"))


# --- static renditions, ranges, validators ---------------------------------------------------------------------


def test_static_renditions(ready) -> None:
    server, _, media, _, playback_id = ready
    highest = (media / "highest.mp4").read_bytes()
    got = requests.get(f"{server.edge_url}/{playback_id}/highest.mp4", timeout=10)
    assert got.status_code == 200 and got.content == highest
    assert got.headers["Content-Type"] == "video/mp4" and got.headers["Cache-Control"] == IMMUTABLE
    # only ready renditions of the asset are served (none of these was asked for)
    for name in ("capped-1080p.mp4", "audio.m4a", "480p.mp4"):
        assert_error(requests.get(f"{server.edge_url}/{playback_id}/{name}", timeout=10), 404, "not_found")
    assert requests.get(f"{server.edge_url}/{playback_id}/low.mp4", timeout=10).status_code == 404


def test_audio_only_asset(api, media_dir, tmp_path_factory) -> None:
    media = packaged_audio_only(media_dir, tmp_path_factory.getbasetemp())
    _, (playback_id,) = publish(api, media)
    master_url = f"{api.edge_url}/{playback_id}.m3u8"
    for query in ({}, {"min_resolution": "1080p", "rendition_order": "desc"}):  # modifiers leave audio alone
        master = m3u8.loads(requests.get(master_url, params=query, timeout=10).text)
        assert [p.uri for p in master.playlists] == [f"{playback_id}/audio/index.m3u8"]
    ffmpeg_decodes(master_url)
    ffmpeg_decodes(f"{api.edge_url}/{playback_id}.mpd")
    stored = (media / "audio.m4a").read_bytes()
    got = requests.get(f"{api.edge_url}/{playback_id}/audio.m4a", timeout=10)
    assert got.status_code == 200 and got.content == stored and got.headers["Content-Type"] == "audio/mp4"
    got = requests.get(f"{api.edge_url}/{playback_id}/audio.m4a", headers={"Range": "bytes=-64"}, timeout=10)
    assert got.status_code == 206 and got.content == stored[-64:]
    for name in ("highest.mp4", "capped-1080p.mp4"):
        assert_error(requests.get(f"{api.edge_url}/{playback_id}/{name}", timeout=10), 404, "not_found")


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-99", 0, 99),
    ("bytes=100-", 100, None),
    ("bytes=-100", -100, None),
    ("bytes=5-5", 5, 5),
    ("bytes=0-9,20-29", 0, 29),  # several ranges: one 206 spanning them
    ("bytes=10-999999999", 10, None),
])
def test_range_requests(ready, header: str, start: int, end: int | None) -> None:
    server, _, media, _, playback_id = ready
    stored = (media / "highest.mp4").read_bytes()
    size = len(stored)
    first = start if start >= 0 else size + start
    last = size - 1 if end is None else end
    for method in (requests.get, requests.head):
        got = method(f"{server.edge_url}/{playback_id}/highest.mp4", headers={"Range": header}, timeout=10)
        assert got.status_code == 206
        assert got.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert got.headers["Content-Length"] == str(last - first + 1)
        assert got.headers["Accept-Ranges"] == "bytes"
        assert got.content == (stored[first:last + 1] if method is requests.get else b"")


def test_other_methods_are_a_typed_405_with_allow(ready) -> None:
    server, _, _, _, playback_id = ready
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in (f"/{playback_id}.m3u8", f"/{playback_id}/480p/seg_00001.m4s", f"/{playback_id}/highest.mp4"):
            got = requests.request(method, server.edge_url + path, timeout=10)
            assert_error(got, 405, "method_not_allowed")
            assert got.headers["Allow"] == "GET, HEAD, OPTIONS"


def test_range_edge_cases(ready) -> None:
    server, _, media, _, playback_id = ready
    url = f"{server.edge_url}/{playback_id}/highest.mp4"
    stored = (media / "highest.mp4").read_bytes()
    size = len(stored)
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        got = requests.get(url, headers={"Range": header}, timeout=10)
        assert got.status_code == 416, header
        assert got.json()["error"]["type"] == "range_not_satisfiable"
        assert got.headers["Content-Range"] == f"bytes */{size}"
        assert got.headers["Access-Control-Allow-Origin"] == "*"
        assert got.headers["Cache-Control"] == "no-store"
    for header in ("bytes=abc", "items=0-5", "bytes=9-1"):  # malformed: ignored, whole file
        got = requests.get(url, headers={"Range": header}, timeout=10)
        assert got.status_code == 200 and got.content == stored, header
    etag = requests.head(url, timeout=10).headers["ETag"]
    got = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}, timeout=10)
    assert got.status_code == 206 and got.content == stored[:10]
    got = requests.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}, timeout=10)
    assert got.status_code == 200 and got.content == stored
    segment = requests.get(f"{server.edge_url}/{playback_id}/240p/seg_00002.m4s", headers={"Range": "bytes=8-15"},
                           timeout=10)
    assert segment.status_code == 206 and segment.content == (media / "240p" / "seg_00002.m4s").read_bytes()[8:16]


def test_etags_and_not_modified(ready) -> None:
    server, _, _, _, playback_id = ready
    for path in (f"/{playback_id}/highest.mp4", f"/{playback_id}/480p/init.mp4", f"/{playback_id}/audio/seg_00001.m4s",
                 f"/{playback_id}.m3u8", f"/{playback_id}.mpd", f"/{playback_id}/240p/index.m3u8"):
        first = requests.get(server.edge_url + path, timeout=10)
        etag = first.headers["ETag"]
        assert etag.startswith('"') and not etag.startswith("W/")  # strong
        assert requests.get(server.edge_url + path, timeout=10).headers["ETag"] == etag  # stable
        for condition in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = requests.get(server.edge_url + path, headers={"If-None-Match": condition}, timeout=10)
            assert again.status_code == 304, (path, condition)
            assert again.content == b""
            assert again.headers["ETag"] == etag
            assert again.headers["Cache-Control"] == first.headers["Cache-Control"]
            assert again.headers["Access-Control-Allow-Origin"] == "*"
        assert requests.get(server.edge_url + path, headers={"If-None-Match": '"other"'}, timeout=10).status_code == 200
    a = requests.head(f"{server.edge_url}/{playback_id}/480p/seg_00001.m4s", timeout=10).headers["ETag"]
    b = requests.head(f"{server.edge_url}/{playback_id}/480p/seg_00002.m4s", timeout=10).headers["ETag"]
    assert a != b


def test_cors(ready) -> None:
    server, _, _, _, playback_id = ready
    origin = {"Origin": "https://player.example"}
    for path in (f"/{playback_id}.m3u8", f"/{playback_id}/480p/seg_00001.m4s", f"/{new_id()}.m3u8",
                 f"/{playback_id}/480p/seg_1.m4s"):
        got = requests.get(server.edge_url + path, headers=origin, timeout=10)
        assert got.headers["Access-Control-Allow-Origin"] == "*", path
        assert "Content-Range" in got.headers["Access-Control-Expose-Headers"]
        assert "ETag" in got.headers["Access-Control-Expose-Headers"]
    preflight = requests.options(f"{server.edge_url}/{playback_id}/highest.mp4", timeout=10, headers={
        **origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range, if-none-match"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"].lower() == "range, if-none-match"
    assert requests.options(f"{server.edge_url}/{playback_id}.m3u8", timeout=10).status_code == 204


# --- errors ------------------------------------------------------------------------------------------------------


def test_unknown_invalid_preparing_errored_and_deleted(ready) -> None:
    server, _, media, _, _ = ready
    for path in (f"/{new_id()}.m3u8", f"/{new_id()}.mpd", f"/{new_id()}/480p/init.mp4", f"/{new_id()}/highest.mp4",
                 "/not-an-id.m3u8", f"/{'a' * 65}.m3u8", "/a.b.m3u8"):
        assert_error(requests.get(server.edge_url + path, timeout=10), 404, "not_found")
    _, (preparing,) = publish(server, None, status=AssetStatus.PREPARING)
    for path in (f"/{preparing}.m3u8", f"/{preparing}.mpd", f"/{preparing}/480p/seg_00001.m4s"):
        assert_error(requests.get(server.edge_url + path, timeout=10), 412, "asset_not_ready")
    _, (errored,) = publish(server, None, status=AssetStatus.ERRORED)
    assert_error(requests.get(f"{server.edge_url}/{errored}.m3u8", timeout=10), 404, "not_found")
    asset_id, (doomed,) = publish(server, media)
    assert requests.get(f"{server.edge_url}/{doomed}.m3u8", timeout=10).status_code == 200
    assert server.client.delete(f"{server.edge_url}/video/v1/assets/{asset_id}", timeout=10).status_code == 204
    for path in (f"/{doomed}.m3u8", f"/{doomed}/480p/seg_00001.m4s", f"/{doomed}/highest.mp4"):
        eventually(lambda path=path: assert_error(requests.get(server.edge_url + path, timeout=10), 404, "not_found"))


def test_unknown_files_and_path_traversal(ready) -> None:
    server, _, _, asset_id, playback_id = ready
    for path in (f"/{playback_id}/480p/seg_1.m4s", f"/{playback_id}/480p/master.m3u8", f"/{playback_id}/480p/x",
                 f"/{playback_id}/480p/seg_99999.m4s", f"/{playback_id}/9999p/index.m3u8"):
        assert_error(requests.get(server.edge_url + path, timeout=10), 404, "not_found")
    host = urlsplit(server.edge_url)
    raw_paths = [f"/{playback_id}/..%2F..%2Fkinoray.db", f"/{playback_id}/480p/../../x",
                 f"/{playback_id}/480p/..%2F..%2F..%2Finput", f"/{playback_id}/480p/%2e%2e%2fhighest.mp4",
                 f"/{playback_id}/..%2Fhighest.mp4", f"/{playback_id}/480p/..", f"/{playback_id}/../{playback_id}.m3u8",
                 f"/..%2Fassets%2F{asset_id}%2Fmedia%2Fmaster.m3u8", f"/{playback_id}/480p/init.mp4%00.m3u8"]
    for raw in raw_paths:
        connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        try:
            connection.request("GET", raw)
            answer = connection.getresponse()
            body = answer.read()
        finally:
            connection.close()
        assert answer.status == 404, (raw, answer.status, body[:200])
        assert b"SQLite" not in body and b"#EXTM3U" not in body and b"ftyp" not in body


# --- pure parts -----------------------------------------------------------------------------------------------------

FOUR_RUNG_MASTER = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Default",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="audio/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=5000000,RESOLUTION=1920x1080,AUDIO="audio"
1080p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=3000000,RESOLUTION=1280x720,AUDIO="audio"
720p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=1400000,RESOLUTION=854x480,AUDIO="audio"
480p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,AUDIO="audio"
360p/index.m3u8
"""


@pytest.mark.parametrize(("selection", "expected"), [
    (RenditionFilter(), ["360p", "480p", "720p", "1080p"]),
    (RenditionFilter(descending=True), ["1080p", "720p", "480p", "360p"]),
    (RenditionFilter(max_resolution=720), ["360p", "480p", "720p"]),
    (RenditionFilter(min_resolution=540), ["720p", "1080p"]),
    (RenditionFilter(min_resolution=480, max_resolution=720, descending=True), ["720p", "480p"]),
    (RenditionFilter(min_resolution=1440), ["1080p"]),
    (RenditionFilter(max_resolution=240), ["360p"]),
    (RenditionFilter(min_resolution=540, max_resolution=600), ["480p"]),  # nearest: 60 below vs 120 above
])
def test_master_rewrite(selection: RenditionFilter, expected: list[str]) -> None:
    out = rewrite_hls_master(FOUR_RUNG_MASTER, prefix="PID/", query="?token=T", selection=selection)
    playlist = m3u8.loads(out)
    assert [p.uri for p in playlist.playlists] == [f"PID/{rung}/index.m3u8?token=T" for rung in expected]
    assert playlist.media[0].uri == "PID/audio/index.m3u8?token=T"


def test_portrait_and_audio_only_masters() -> None:
    portrait = FOUR_RUNG_MASTER.replace("1920x1080", "1080x1920").replace("1280x720", "720x1280")
    out = m3u8.loads(rewrite_hls_master(portrait, prefix="p/", selection=RenditionFilter(min_resolution=720)))
    assert [p.uri for p in out.playlists] == ["p/720p/index.m3u8", "p/1080p/index.m3u8"]
    audio_only = ('#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH=131000,CODECS="mp4a.40.2"\n'
                  "audio/index.m3u8\n")
    out = m3u8.loads(rewrite_hls_master(audio_only, prefix="p/", selection=RenditionFilter(min_resolution=1080)))
    assert [p.uri for p in out.playlists] == ["p/audio/index.m3u8"]
    with pytest.raises(ValueError):
        rewrite_hls_master("not a playlist", prefix="p/")
    with pytest.raises(ValueError):
        RenditionFilter(min_resolution=1080, max_resolution=720)


def test_media_playlist_and_mpd_rewrite() -> None:
    playlist = '#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:2.0,\nseg_00001.m4s\n#EXT-X-ENDLIST\n'
    out = m3u8.loads(rewrite_hls_media(playlist, query="?token=a.b-c_d"))
    assert out.segment_map[0].uri == "init.mp4?token=a.b-c_d"
    assert [s.uri for s in out.segments] == ["seg_00001.m4s?token=a.b-c_d"]
    source = (
        '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"><Period>'
        '<AdaptationSet contentType="video" maxWidth="1280" maxHeight="720">'
        '<Representation id="720p" bandwidth="3" width="1280" height="720"><SegmentTemplate '
        'initialization="720p/init.mp4" media="720p/seg_$Number%05d$.m4s"/></Representation>'
        '<Representation id="360p" bandwidth="1" width="640" height="360"><SegmentTemplate '
        'initialization="360p/init.mp4" media="360p/seg_$Number%05d$.m4s"/></Representation>'
        "</AdaptationSet></Period></MPD>")
    parsed = mpegdash.parser.MPEGDASHParser.parse(
        rewrite_dash_mpd(source, prefix="P/", query="?token=T", selection=RenditionFilter(max_resolution=480)))
    adaptation = parsed.periods[0].adaptation_sets[0]
    assert [r.id for r in adaptation.representations] == ["360p"]
    assert adaptation.max_width == 640 and adaptation.max_height == 360
    template = adaptation.representations[0].segment_templates[0]
    assert template.initialization == "P/360p/init.mp4?token=T"
    assert template.media == "P/360p/seg_$Number%05d$.m4s?token=T"


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("bytes=0-0", (0, 0)), ("bytes=0-", (0, 999)), ("bytes=-1", (999, 999)),
    ("bytes=-5000", (0, 999)), ("BYTES=1-2", (1, 2)), ("bytes= 1-2 , 5-6", (1, 6)), ("bytes=990-2000", (990, 999)),
    ("bytes=1000-,0-1", (0, 1)), ("lines=0-1", None), ("bytes=", None), ("bytes=a-b", None), ("bytes=5-1", None),
    ("bytes=-", None), ("bytes=1", None), ("bytes=+1-2", None),
])
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    got = delivery.parse_range(header, 1000)
    assert (None if got is None else (got.start, got.end)) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0", "bytes=1000-,2000-"])
def test_parse_range_unsatisfiable(header: str) -> None:
    with pytest.raises(ValueError):
        delivery.parse_range(header, 1000)


def test_validators() -> None:
    assert delivery.etag_matches('"a"', '"a"') and delivery.etag_matches('W/"a"', '"a"')
    assert delivery.etag_matches('"b", "a"', '"a"') and delivery.etag_matches("*", '"a"')
    assert not delivery.etag_matches(None, '"a"') and not delivery.etag_matches('"b"', '"a"')
    assert delivery.if_range_allows(None, '"a"') and delivery.if_range_allows('"a"', '"a"')
    assert not delivery.if_range_allows('W/"a"', '"a"')
    assert not delivery.if_range_allows("Wed, 21 Oct 2015 07:28:00 GMT", '"a"')


def test_rendition_filter_from_query() -> None:
    public = delivery.Playback("p", "a", PlaybackPolicy.PUBLIC, "assets/a/media")
    assert delivery.rendition_filter(public, {"max_resolution": "1080p", "rendition_order": "desc"}) == \
        RenditionFilter(max_resolution=1080, descending=True)
    signed = delivery.Playback("p", "a", PlaybackPolicy.SIGNED, "assets/a/media", token="t",
                               claims={"exp": 2**31, "min_resolution": "720p"})
    assert delivery.rendition_filter(signed, {"max_resolution": "720p"}) == RenditionFilter(min_resolution=720)
    assert signed.query == "?token=t" and public.query == ""
