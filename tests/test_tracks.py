"""Text tracks: SRT/WebVTT parsing and normalization (pure), then ``POST/DELETE /video/v1/assets/{id}/tracks``
over real HTTP on SQLite and PostgreSQL, with the tracks delivered as an HLS ``SUBTITLES`` group (parsed with
``m3u8``, read by Debian's ffmpeg) and DASH text adaptation sets (parsed with ``mpegdash``), signed ids carrying
their token, and every way a caption file can be wrong refused with a typed 400 that changes nothing.
"""

from __future__ import annotations

import base64
import subprocess
from fractions import Fraction
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import m3u8
import mpegdash.parser
import pytest
import requests
import sqlalchemy as sa

from kinoray.control.playback import text_renditions
from kinoray.errors import InvalidMediaError
from kinoray.media.captions import (
    MAX_CAPTION_BYTES,
    Captions,
    Cue,
    format_timestamp,
    hls_subtitle_playlist,
    parse_captions,
    parse_webvtt,
    write_webvtt,
)
from kinoray.media.manifest_rewrite import (
    TextRendition,
    presentation_timing,
    rewrite_dash_mpd,
    rewrite_hls_master,
)
from kinoray.store.models import Asset, AssetStatus, Event, PlaybackPolicy
from tests.api_server import eventually
from tests.test_playback import FOUR_RUNG_MASTER, assert_error, ffmpeg_decodes, packaged_asset, publish
from tests.test_playback_signed import mint

RICH_SRT = (
    "\ufeff1\r\n"
    "00:00:00,500 --> 00:00:01,750\r\n"
    "<i>Hello</i> & welcome\r\n"
    "to <B>kinoray</B>\r\n"
    "\r\n"
    "2\r\n"
    "00:00:02.000 --> 00:00:03,250\r\n"
    '{\\an8}<font color="#ffff00">Top line</font>\r\n'
    "\r\n"
    "3\r\n"
    "00:00:04,000 --> 00:00:05,900  X1:10 X2:20 Y1:5 Y2:9\r\n"
    "Last one: 1 < 2 --> 3\r\n"
)
RICH_SRT_TIMES = [(500, 1750), (2000, 3250), (4000, 5900)]

RICH_VTT = (
    "WEBVTT - kinoray test\n"
    "Kind: captions\n"
    "X-TIMESTAMP-MAP=MPEGTS:900000,LOCAL:00:00:00.000\n"
    "\n"
    "STYLE\n"
    "::cue(.loud) { color: yellow }\n"
    "\n"
    "NOTE this comment is dropped\n"
    "\n"
    "intro\n"
    "00:00.250 --> 00:01.000 align:start line:10% bogus:1\n"
    "<v Alice>Hi <c.loud>there</c></v>\n"
    "\n"
    "intro\n"
    "00:00:01.500 --> 00:00:02,500\n"
    "Same id again: only the first keeps it\n"
    "00:00:03.000 --> 00:00:04.000\n"
    "A cue right after the previous one, no blank line (WebVTT starts a new cue)\n"
)


def srt(*cues: tuple[str, str, str]) -> bytes:
    return "\n".join(f"{n}\n{start} --> {end}\n{text}\n" for n, (start, end, text) in enumerate(cues, 1)).encode()


def ffprobe_cues(path_or_url: str, *extra: str) -> list[float]:
    """Start and end seconds of every subtitle packet Debian's ffprobe reads (an independent WebVTT parser),
    flattened: ``[start0, end0, start1, ...]``."""
    done = subprocess.run(["ffprobe", "-v", "error", *extra, "-select_streams", "s:0", "-show_entries",
                           "packet=pts_time,duration_time", "-of", "csv=p=0", path_or_url],
                          capture_output=True, text=True, timeout=60, check=True)
    cues = []
    for line in done.stdout.split():
        start, duration = (float(value) for value in line.split(",")[:2])
        cues += [start, start + duration]
    return cues


def flat_seconds(times: list[tuple[int, int]]) -> list[float]:
    return [milliseconds / 1000 for pair in times for milliseconds in pair]


# --- parsing and writing (pure) ----------------------------------------------------------------------------------


def test_srt_with_bom_crlf_tags_and_both_separators_becomes_webvtt(tmp_path: Path) -> None:
    captions = parse_captions(RICH_SRT.encode("utf-8"))
    assert captions.source_format == "srt"
    assert [(c.start_ms, c.end_ms) for c in captions.cues] == RICH_SRT_TIMES
    assert captions.cues[0].text == "<i>Hello</i> &amp; welcome\nto <b>kinoray</b>"
    assert captions.cues[1].text == "Top line" and captions.cues[1].settings == "line:0"  # {\an8}: at the top
    assert captions.cues[2].text == "Last one: 1 &lt; 2 --&gt; 3"
    assert [c.identifier for c in captions.cues] == ["", "", ""]  # SRT numbers are not kept
    vtt = write_webvtt(captions, mpegts=0)
    assert vtt.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n")
    assert "\r" not in vtt and "\ufeff" not in vtt
    assert [(c.start_ms, c.end_ms, c.text, c.settings) for c in parse_webvtt(vtt).cues] == \
        [(c.start_ms, c.end_ms, c.text, c.settings) for c in captions.cues]
    path = tmp_path / "out.vtt"
    path.write_text(vtt)
    got = ffprobe_cues(str(path))  # Debian's WebVTT demuxer reads what we wrote
    assert got == pytest.approx(flat_seconds(RICH_SRT_TIMES), abs=0.001)


def test_webvtt_keeps_ids_settings_styles_and_markup() -> None:
    captions = parse_captions(("\ufeff" + RICH_VTT).replace("\n", "\r\n").encode("utf-8"))
    assert captions.source_format == "vtt"
    assert [(c.start_ms, c.end_ms) for c in captions.cues] == [(250, 1000), (1500, 2500), (3000, 4000)]
    assert [c.identifier for c in captions.cues] == ["intro", "", ""]
    assert captions.cues[0].settings == "align:start line:10%"  # unknown settings dropped
    assert captions.cues[0].text == "<v Alice>Hi <c.loud>there</c></v>"
    assert captions.blocks == ("STYLE\n::cue(.loud) { color: yellow }",)
    vtt = write_webvtt(captions)
    assert vtt.startswith("WEBVTT\n\nSTYLE\n") and "NOTE" not in vtt and "MPEGTS:900000" not in vtt
    assert "intro\n00:00:00.250 --> 00:00:01.000 align:start line:10%\n<v Alice>" in vtt
    assert [(c.start_ms, c.end_ms, c.text) for c in parse_webvtt(vtt).cues] == \
        [(c.start_ms, c.end_ms, c.text) for c in captions.cues]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be-bom"])
def test_utf16_with_bom(encoding: str) -> None:
    text = "1\n00:00:01,000 --> 00:00:02,000\nÜber café 字幕\n"
    data = b"\xfe\xff" + text.encode("utf-16-be") if encoding == "utf-16-be-bom" else text.encode("utf-16")
    assert parse_captions(data).cues[0].text == "Über café 字幕"


@pytest.mark.parametrize(("data", "needle"), [
    (b"", "empty"),
    (b" \n\n", "empty"),
    (b"\x00\x00\x00\x18ftypisom" + bytes(200), "binary (a NUL byte at offset 0)"),
    (b"\x1a\x45\xdf\xa3\x01\x02garbage\x03", "line 1: control character U+001A"),
    ("1\n00:00:01,000 --> 00:00:02,000\ncafé\n".encode("latin-1"), "line 3: the caption file is not valid UTF-8"),
    (b"x" * (MAX_CAPTION_BYTES + 1), f"the limit is {MAX_CAPTION_BYTES} bytes"),
    (b"just some text\nwith no cues\n", "not an SRT or WebVTT file"),
    (srt(("00:00:01,000", "00:00:02,000", "a"), ("00:00:03;000", "00:00:04,000", "b")),
     "line 6: bad timestamp '00:00:03;000'"),
    (srt(("00:00:01,000", "00:00:02,000", "a"), ("00:00:04,000", "00:00:03,000", "b")),
     "line 6: the cue ends (00:00:03,000) before it starts"),
    (srt(("00:00:01,000", "00:00:01,000", "a")), "line 2: the cue ends"),
    (srt(("00:00:05,000", "00:00:06,000", "a"), ("00:00:01,000", "00:00:02,000", "b")),
     "line 6: this cue starts at 00:00:01.000, before the cue at line 2"),
    (srt(("00:00:01,000", "00:75:02,000", "a")), "minutes and seconds must be 00-59"),
    (srt(("13:00:00,000", "13:00:01,000", "a")), "line 2: cue time 13:00:01.000 is beyond the 12:00:00.000 limit"),
    (b"1\n00:00:01,000 --> 00:00:02,000\nfirst paragraph\n\nsecond paragraph\n", "line 5: expected a cue number"),
    (b"1\n00:00:01,000 --> 00:00:02,000\n\n2\n00:00:03,000 --> 00:00:04,000\n\n", "no cue with text"),
    (b"WEBVTT\n00:01.000 --> 00:02.000\nno blank line after the header\n", "line 2: a blank line must separate"),
    (b"WEBVTT FILE\n\n", "no cue with text"),
    (b"WEBVTTX\n\n00:01.000 --> 00:02.000\nx\n", "line 1: a WebVTT file starts with 'WEBVTT'"),
    (b"\n\nWEBVTT\n\n00:01.000 --> 00:02.000\nx\n", "line 3: a WebVTT file must start with 'WEBVTT'"),
    (b"webvtt\n\n00:01.000 --> 00:02.000\nx\n", "line 1: a WebVTT file must start with 'WEBVTT' (upper case)"),
    (b"WEBVTT\n\n00:01.000 --> 00:02.000\nx\n\nstray text\n", "line 6: expected a cue timing line"),
    (b"WEBVTT\n\nid\nmore\n00:01.000 --> 00:02.000\nx\n", "line 5: a cue timing line must be the first or second"),
])
def test_bad_caption_files_are_refused_with_the_line(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidMediaError) as caught:
        parse_captions(data)
    assert needle in str(caught.value)


def test_dataclass_invariants_and_formatting() -> None:
    with pytest.raises(ValueError):
        Cue(2000, 1000, "x")
    with pytest.raises(ValueError):
        Cue(0, 1000, "a\n\nb")
    with pytest.raises(ValueError):
        Cue(0, 1000, "a --> b")
    with pytest.raises(ValueError):
        Captions("srt", ())
    with pytest.raises(ValueError):
        Captions("srt", (Cue(5000, 6000, "b"), Cue(1000, 2000, "a")))
    assert format_timestamp(0) == "00:00:00.000" and format_timestamp(45_296_789) == "12:34:56.789"
    assert format_timestamp(360_000_000) == "100:00:00.000"
    captions = Captions("srt", (Cue(0, 1000, "x"),))
    assert "MPEGTS:1," in write_webvtt(captions, mpegts=2**33 + 1)  # 33-bit wrap, as in MPEG-TS
    playlist = m3u8.loads(hls_subtitle_playlist("t.vtt?token=a", Fraction(601, 100)))
    assert playlist.target_duration == 7 and playlist.is_endlist and playlist.playlist_type == "vod"
    assert [(s.uri, s.duration) for s in playlist.segments] == [("t.vtt?token=a", 6.01)]
    with pytest.raises(ValueError):
        hls_subtitle_playlist("t.vtt", Fraction(0))


TRACKS = (TextRendition("A" * 32, "English", "en", uri=f"text/{'A' * 32}.m3u8", vtt_uri=f"text/{'A' * 32}.vtt"),
          TextRendition("B" * 32, "English (CC)", "en-US", closed_captions=True, uri=f"text/{'B' * 32}.m3u8",
                        vtt_uri=f"text/{'B' * 32}.vtt"))


def test_master_gets_a_subtitles_group_every_variant_names() -> None:
    out = m3u8.loads(rewrite_hls_master(FOUR_RUNG_MASTER, prefix="PID/", query="?token=T", subtitles=TRACKS))
    subtitles = [m for m in out.media if m.type == "SUBTITLES"]
    assert [(m.group_id, m.name, m.language, m.default, m.autoselect, m.forced, m.uri) for m in subtitles] == [
        ("subs", "English", "en", "NO", "YES", "NO", f"PID/text/{'A' * 32}.m3u8?token=T"),
        ("subs", "English (CC)", "en-US", "NO", "YES", "NO", f"PID/text/{'B' * 32}.m3u8?token=T")]
    assert subtitles[0].characteristics is None
    assert subtitles[1].characteristics == ("public.accessibility.transcribes-spoken-dialog,"
                                            "public.accessibility.describes-music-and-sound")
    assert len(out.playlists) == 4 and all(p.stream_info.subtitles == "subs" for p in out.playlists)
    assert [m.type for m in out.media] == ["AUDIO", "SUBTITLES", "SUBTITLES"]
    plain = rewrite_hls_master(FOUR_RUNG_MASTER, prefix="PID/")
    assert "SUBTITLES" not in plain
    with pytest.raises(ValueError):
        TextRendition("C" * 32, 'say "hi"', "en")


def test_mpd_gets_text_adaptation_sets_and_timing(tmp_path: Path) -> None:
    source = (
        '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT1M2.500S"><Period>'
        '<AdaptationSet id="0" contentType="video"><Representation id="360p" bandwidth="1" width="640" height="360">'
        '<SegmentTemplate timescale="90000" initialization="360p/init.mp4" media="360p/seg_$Number%05d$.m4s">'
        '<SegmentTimeline><S t="1800" d="180000" r="3"/></SegmentTimeline></SegmentTemplate></Representation>'
        '</AdaptationSet><AdaptationSet id="1" contentType="audio"><Representation id="audio" bandwidth="1">'
        '<SegmentTemplate timescale="48000" initialization="audio/init.mp4" media="audio/seg_$Number%05d$.m4s">'
        '<SegmentTimeline><S t="-1024" d="96000"/></SegmentTimeline></SegmentTemplate></Representation>'
        "</AdaptationSet></Period></MPD>")
    timing = presentation_timing(source)
    assert timing.start == Fraction(1800, 90000) and timing.duration == Fraction(125, 2)
    assert presentation_timing(source.replace('contentType="video"', 'contentType="other"')).start == \
        Fraction(-1024, 48000)
    with pytest.raises(ValueError):
        presentation_timing(source.replace("PT1M2.500S", "P1D"))
    mpd = mpegdash.parser.MPEGDASHParser.parse(rewrite_dash_mpd(source, prefix="P/", query="?token=T",
                                                                subtitles=TRACKS))
    text = [a for a in mpd.periods[0].adaptation_sets if a.content_type == "text"]
    assert [(a.id, a.mime_type, a.lang) for a in text] == [(2, "text/vtt", "en"), (3, "text/vtt", "en-US")]
    assert [[(r.scheme_id_uri, r.value) for r in a.roles] for a in text] == [
        [("urn:mpeg:dash:role:2011", "subtitle")], [("urn:mpeg:dash:role:2011", "caption")]]
    assert [a.representations[0].base_urls[0].base_url_value for a in text] == [
        f"P/text/{'A' * 32}.vtt?token=T", f"P/text/{'B' * 32}.vtt?token=T"]
    assert all(a.representations[0].bandwidth for a in text)


def test_text_renditions_from_asset_tracks() -> None:
    tracks = [{"type": "video", "id": "v"},
              {"type": "text", "id": "A" * 32, "name": "Deutsch", "language_code": "de", "status": "ready",
               "closed_captions": True},
              {"type": "text", "id": "B" * 32, "name": "x", "language_code": "fr", "status": "preparing"},
              {"type": "text", "id": "C" * 32, "language_code": "fr", "status": "ready"},  # no name: left out
              {"type": "text", "id": "../x", "name": "x", "language_code": "fr", "status": "ready"}]
    assert text_renditions(tracks) == (TextRendition("A" * 32, "Deutsch", "de", True, f"text/{'A' * 32}.m3u8",
                                                     f"text/{'A' * 32}.vtt"),)


# --- over HTTP ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory):
    """The API with ``file://`` inputs allowed, so tests feed caption files from disk."""
    from tests.api_server import ApiServer

    server = ApiServer(api_backend.new_url(), tmp_path_factory.mktemp("tracks-data"),
                       api={"allow_file_inputs": True})
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("captions")


def caption_url(files: Path, name: str, data: bytes | str) -> str:
    path = files / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path.as_uri()


@pytest.fixture()
def asset(api, media_dir, tmp_path_factory):
    """``(server, asset id, public playback id)``: a fresh ready asset with a video and an audio track."""
    _, media = packaged_asset(media_dir, tmp_path_factory.getbasetemp())
    asset_id, (playback_id,) = publish(api, media)
    with api.platform.db.session() as session:
        row = session.get(Asset, asset_id)
        row.tracks = [{"type": "video", "id": "V" * 32, "max_width": 854, "max_height": 480},
                      {"type": "audio", "id": "U" * 32, "max_channels": 2}]
    return api, asset_id, playback_id


def add(server, asset_id: str, **body) -> requests.Response:
    return server.client.post(f"{server.edge_url}/video/v1/assets/{asset_id}/tracks",
                              json={"type": "text", "text_type": "subtitles", "language_code": "en", **body},
                              timeout=30)


def stored_text_files(server, asset_id: str) -> list[str]:
    return server.platform.store.list(f"assets/{asset_id}/media/text")


def test_add_track_then_hls_dash_and_ffmpeg_see_it(asset, files) -> None:
    server, asset_id, playback_id = asset
    created = add(server, asset_id, url=caption_url(files, "rich.srt", RICH_SRT), name="English",
                  passthrough="from-srt")
    assert created.status_code == 201, created.text
    track = created.json()["data"]
    assert track == {"type": "text", "id": track["id"], "text_type": "subtitles", "text_source": "uploaded",
                     "language_code": "en", "name": "English", "closed_captions": False,
                     "passthrough": "from-srt", "status": "ready"}
    shown = server.client.get(f"{server.edge_url}/video/v1/assets/{asset_id}", timeout=10).json()["data"]
    assert [t["type"] for t in shown["tracks"]] == ["video", "audio", "text"] and shown["tracks"][2] == track
    assert sorted(stored_text_files(server, asset_id)) == [
        f"assets/{asset_id}/media/text/{track['id']}.m3u8", f"assets/{asset_id}/media/text/{track['id']}.vtt"]

    master_url = f"{server.edge_url}/{playback_id}.m3u8"
    master = m3u8.loads(requests.get(master_url, timeout=10).text, uri=master_url)
    (subtitles,) = [m for m in master.media if m.type == "SUBTITLES"]
    assert (subtitles.group_id, subtitles.name, subtitles.language, subtitles.default, subtitles.autoselect) == \
        ("subs", "English", "en", "NO", "YES")
    assert subtitles.uri == f"{playback_id}/text/{track['id']}.m3u8"
    assert len(master.playlists) == 2 and all(p.stream_info.subtitles == "subs" for p in master.playlists)

    playlist_url = urljoin(master_url, subtitles.uri)
    answer = requests.get(playlist_url, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert answer.headers["Cache-Control"] == "public, max-age=5"
    playlist = m3u8.loads(answer.text, uri=playlist_url)
    assert playlist.is_endlist and [s.duration for s in playlist.segments] == [6.0]  # the whole presentation
    vtt_url = urljoin(playlist_url, playlist.segments[0].uri)
    assert urlsplit(vtt_url).path == f"/{playback_id}/text/{track['id']}.vtt"
    vtt = requests.get(vtt_url, timeout=10, headers={"Origin": "https://player.example"})
    assert vtt.status_code == 200 and vtt.headers["Content-Type"].startswith("text/vtt")
    assert vtt.headers["Access-Control-Allow-Origin"] == "*"
    assert vtt.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    # cue time 0 is the video's first media timestamp (tfdt 0): what hls.js subtracts as initPTS
    assert vtt.text.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n")
    assert [(c.start_ms, c.end_ms) for c in parse_webvtt(vtt.text).cues] == RICH_SRT_TIMES
    again = requests.get(vtt_url, headers={"If-None-Match": vtt.headers["ETag"]}, timeout=10)
    assert again.status_code == 304 and again.headers["Access-Control-Allow-Origin"] == "*"
    head = requests.head(vtt_url, timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(vtt.content))
    assert requests.options(vtt_url, timeout=10).status_code == 204

    ffmpeg_decodes(master_url)  # the subtitle group does not disturb a client that ignores it
    # ffmpeg reads HLS WebVTT renditions only with -strict experimental; then it lists and decodes them
    probe = subprocess.run(["ffprobe", "-v", "error", "-strict", "experimental", "-show_entries",
                            "stream=codec_type,codec_name:stream_tags=language", "-of", "csv=p=0", master_url],
                           capture_output=True, text=True, timeout=60, check=True)
    assert "subtitle,webvtt,en" in probe.stdout.replace("webvtt,subtitle", "subtitle,webvtt"), probe.stdout
    got = ffprobe_cues(master_url, "-strict", "experimental")
    # ffmpeg shifts every stream by the AAC priming (1024/48000 s) it sees at the audio's start
    assert got == pytest.approx(flat_seconds(RICH_SRT_TIMES), abs=0.03)

    mpd_url = f"{server.edge_url}/{playback_id}.mpd"
    mpd = mpegdash.parser.MPEGDASHParser.parse(requests.get(mpd_url, timeout=10).text)
    (text,) = [a for a in mpd.periods[0].adaptation_sets if a.content_type == "text"]
    assert (text.mime_type, text.lang, text.roles[0].value) == ("text/vtt", "en", "subtitle")
    base_url = text.representations[0].base_urls[0].base_url_value
    fetched = requests.get(urljoin(mpd_url, base_url), timeout=10)
    assert fetched.status_code == 200 and fetched.content == vtt.content
    ffmpeg_decodes(mpd_url)


def test_modifiers_keep_the_group_and_cc_tracks_get_characteristics(asset, files) -> None:
    server, asset_id, playback_id = asset
    url = caption_url(files, "plain.vtt", RICH_VTT)
    first = add(server, asset_id, url=url)
    cc = add(server, asset_id, url=url, closed_captions=True)
    cc_pt = add(server, asset_id, url=url, closed_captions=True, language_code="pt-BR")
    other = add(server, asset_id, url=url, language_code="x-klingon")
    assert [a.status_code for a in (first, cc, cc_pt)] == [201, 201, 201], cc.text
    assert other.status_code == 400  # not a BCP 47 tag this API accepts
    names = [a.json()["data"]["name"] for a in (first, cc, cc_pt)]
    assert names == ["English", "English (CC)", "Portuguese (BR) (CC)"]  # defaults from the language, distinct
    assert add(server, asset_id, url=url).json()["data"]["name"] == "English 2"
    taken = add(server, asset_id, url=url, name="English (CC)")
    assert_error_type(taken, 409, "conflict")

    for query in ({"min_resolution": "480p"}, {"max_resolution": "720p", "rendition_order": "desc"}):
        master = m3u8.loads(requests.get(f"{server.edge_url}/{playback_id}.m3u8", params=query, timeout=10).text)
        assert master.playlists and all(p.stream_info.subtitles == "subs" for p in master.playlists)
        subtitles = [m for m in master.media if m.type == "SUBTITLES"]
        assert [m.name for m in subtitles] == ["English", "English (CC)", "Portuguese (BR) (CC)", "English 2"]
        assert [m.characteristics is not None for m in subtitles] == [False, True, True, False]
    mpd = mpegdash.parser.MPEGDASHParser.parse(requests.get(f"{server.edge_url}/{playback_id}.mpd", timeout=10).text)
    roles = [(a.lang, a.roles[0].value) for a in mpd.periods[0].adaptation_sets if a.content_type == "text"]
    assert roles == [("en", "subtitle"), ("en", "caption"), ("pt-BR", "caption"), ("en", "subtitle")]


def assert_error_type(answer: requests.Response, status: int, error_type: str) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()["error"]
    assert body["type"] == error_type and body["messages"]
    return " ".join(body["messages"])


def test_signed_ids_carry_the_token_to_subtitles(api, media_dir, tmp_path_factory, files) -> None:
    _, media = packaged_asset(media_dir, tmp_path_factory.getbasetemp())
    asset_id, (signed_id,) = publish(api, media, policies=(PlaybackPolicy.SIGNED,))
    track = add(api, asset_id, url=caption_url(files, "signed.srt", RICH_SRT)).json()["data"]
    key = api.client.post(f"{api.edge_url}/system/v1/signing-keys", timeout=10).json()["data"]
    token = mint(key["id"], base64.b64decode(key["private_key"]), signed_id)
    master_url = f"{api.edge_url}/{signed_id}.m3u8?token={token}"
    master = m3u8.loads(requests.get(master_url, timeout=10).text, uri=master_url)
    (subtitles,) = [m for m in master.media if m.type == "SUBTITLES"]
    assert parse_qs(urlsplit(subtitles.uri).query)["token"] == [token]
    playlist_url = urljoin(master_url, subtitles.uri)
    answer = requests.get(playlist_url, timeout=10)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "private, no-store"
    vtt_uri = m3u8.loads(answer.text).segments[0].uri
    assert parse_qs(urlsplit(vtt_uri).query)["token"] == [token]
    vtt = requests.get(urljoin(playlist_url, vtt_uri), timeout=10)
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")
    assert vtt.headers["Cache-Control"].startswith("public, max-age=") and "31536000" not in vtt.headers["Cache-Control"]
    bare = f"{api.edge_url}/{signed_id}/text/{track['id']}.vtt"
    assert_error(requests.get(bare, timeout=10), 403, "playback_forbidden")
    mpd_url = f"{api.edge_url}/{signed_id}.mpd?token={token}"
    mpd = mpegdash.parser.MPEGDASHParser.parse(requests.get(mpd_url, timeout=10).text)
    (text,) = [a for a in mpd.periods[0].adaptation_sets if a.content_type == "text"]
    base_url = text.representations[0].base_urls[0].base_url_value
    assert parse_qs(urlsplit(base_url).query)["token"] == [token]
    assert requests.get(urljoin(mpd_url, base_url), timeout=10).status_code == 200
    ffmpeg_decodes(master_url)


def test_delete_removes_the_track_its_files_and_manifest_entries(asset, files) -> None:
    server, asset_id, playback_id = asset
    url = caption_url(files, "gone.srt", RICH_SRT)
    kept, doomed = (add(server, asset_id, url=url, name=name).json()["data"] for name in ("Keep", "Drop"))
    vtt_url = f"{server.edge_url}/{playback_id}/text/{doomed['id']}.vtt"
    assert requests.get(vtt_url, timeout=10).status_code == 200
    base = f"{server.edge_url}/video/v1/assets/{asset_id}/tracks"
    assert server.client.delete(f"{base}/{doomed['id']}", timeout=10).status_code == 204
    shown = server.client.get(f"{server.edge_url}/video/v1/assets/{asset_id}", timeout=10).json()["data"]
    assert [t["id"] for t in shown["tracks"] if t["type"] == "text"] == [kept["id"]]

    def doomed_gone() -> None:  # every edge process drops the track within the invalidation bound
        assert_error(requests.get(vtt_url, timeout=10), 404, "not_found")
        assert_error(requests.get(vtt_url.replace(".vtt", ".m3u8"), timeout=10), 404, "not_found")
        master = m3u8.loads(requests.get(f"{server.edge_url}/{playback_id}.m3u8", timeout=10).text)
        assert [m.name for m in master.media if m.type == "SUBTITLES"] == ["Keep"]
        mpd_text = requests.get(f"{server.edge_url}/{playback_id}.mpd", timeout=10).text
        assert doomed["id"] not in mpd_text and kept["id"] in mpd_text

    eventually(doomed_gone)
    assert not any(doomed["id"] in key for key in stored_text_files(server, asset_id))

    assert server.client.delete(f"{base}/{kept['id']}", timeout=10).status_code == 204

    def all_gone() -> None:
        assert "SUBTITLES" not in requests.get(f"{server.edge_url}/{playback_id}.m3u8", timeout=10).text
        assert "text/vtt" not in requests.get(f"{server.edge_url}/{playback_id}.mpd", timeout=10).text

    eventually(all_gone)
    assert stored_text_files(server, asset_id) == []
    assert_error_type(server.client.delete(f"{base}/{kept['id']}", timeout=10), 404, "not_found")
    assert_error_type(server.client.delete(f"{base}/{'V' * 32}", timeout=10), 409, "conflict")  # the video
    assert_error_type(server.client.delete(f"{base}/not.an.id", timeout=10), 404, "not_found")
    with server.platform.db.session() as session:
        types = session.scalars(sa.select(Event.type).where(Event.object_id == asset_id)
                                .order_by(Event.created_at, Event.id)).all()
    assert sorted(types) == sorted(["video.asset.track.created", "video.asset.track.ready"] * 2
                                   + ["video.asset.track.deleted"] * 2)


@pytest.mark.parametrize(("name", "data", "needle"), [
    ("bad-time.srt", srt(("00:00:01,000", "00:00:02,000", "a"), ("00:00:03", "00:00:04,000", "b")),
     "line 6: bad timestamp"),
    ("backwards.srt", srt(("00:00:04,000", "00:00:03,000", "b")), "line 2: the cue ends"),
    ("latin1.srt", "1\n00:00:01,000 --> 00:00:02,000\ncafé\n".encode("latin-1"), "not valid UTF-8"),
    ("video.mp4", b"\x00\x00\x00\x18ftypisom" + bytes(64), "binary"),
    ("empty.srt", b"", "the caption URL returned no data"),
    ("huge.srt", b"1\n00:00:01,000 --> 00:00:02,000\n" + b"a" * MAX_CAPTION_BYTES, "larger than"),
])
def test_bad_files_are_a_typed_400_that_changes_nothing(asset, files, name: str, data: bytes, needle: str) -> None:
    server, asset_id, playback_id = asset
    before = server.client.get(f"{server.edge_url}/video/v1/assets/{asset_id}", timeout=10).json()["data"]
    message = assert_error_type(add(server, asset_id, url=caption_url(files, name, data)), 400, "invalid_media")
    assert needle in message
    assert server.client.get(f"{server.edge_url}/video/v1/assets/{asset_id}", timeout=10).json()["data"] == before
    assert stored_text_files(server, asset_id) == []
    assert "SUBTITLES" not in requests.get(f"{server.edge_url}/{playback_id}.m3u8", timeout=10).text


def test_refused_urls_and_request_errors(asset, files) -> None:
    server, asset_id, _ = asset
    good = caption_url(files, "ok.srt", RICH_SRT)
    message = assert_error_type(add(server, asset_id, url="http://127.0.0.1:9/subs.srt"), 400, "input_url_refused")
    assert "127.0.0.1" in message or "private" in message or "loopback" in message
    assert_error_type(add(server, asset_id, url="http://169.254.169.254/latest/meta-data"), 400, "input_url_refused")
    assert_error_type(add(server, asset_id, url=(files / "missing.srt").as_uri()), 400, "invalid_media")
    assert_error_type(add(server, asset_id, url=good, type="audio"), 400, "invalid_parameters")
    assert_error_type(add(server, asset_id, url=good, text_type="captions"), 400, "invalid_parameters")
    assert_error_type(add(server, asset_id, url=good, name='a "quoted" name'), 400, "invalid_parameters")
    assert_error_type(add(server, asset_id, url=good, language_code="english please"), 400, "invalid_parameters")
    assert_error_type(add(server, asset_id, url=good, unknown=1), 400, "invalid_parameters")
    assert_error_type(add(server, "Z" * 32, url=good), 404, "not_found")
    for status in (AssetStatus.PREPARING, AssetStatus.ERRORED):
        not_ready, _ = publish(server, None, status=status)
        assert_error_type(add(server, not_ready, url=good), 412, "asset_not_ready")
    anonymous = requests.post(f"{server.edge_url}/video/v1/assets/{asset_id}/tracks",
                              json={"url": good, "type": "text", "language_code": "en"}, timeout=10)
    assert_error_type(anonymous, 401, "unauthorized")
    assert stored_text_files(server, asset_id) == []


def test_files_of_unknown_tracks_and_odd_names_are_404(asset, files) -> None:
    server, asset_id, playback_id = asset
    track = add(server, asset_id, url=caption_url(files, "x.srt", RICH_SRT)).json()["data"]
    for path in (f"/{playback_id}/text/{'Q' * 32}.vtt", f"/{playback_id}/text/{track['id']}.srt",
                 f"/{playback_id}/text/{track['id']}.source", f"/{playback_id}/text/{track['id'][:31]}.vtt",
                 f"/{playback_id}/text/..%2F{track['id']}.vtt"):
        answer = requests.get(server.edge_url + path, timeout=10)
        assert answer.status_code == 404, path
    _, (other_pid,) = publish(server, None)  # another asset: a track id of this one opens nothing there
    assert_error(requests.get(f"{server.edge_url}/{other_pid}/text/{track['id']}.vtt", timeout=10), 404, "not_found")
