"""Mux's remaining playback modifiers: instant clipping (``asset_start_time``/``asset_end_time``) over the
existing segment grid, ``default_subtitles_lang``, ``redundant_streams``, every ``min_resolution``/
``max_resolution`` value Mux's SDKs send, and ``rendition_order``.

The manifests are the packager's real output (a 6 s asset in 2 s segments, tests/test_playback.py), parsed
with the ``m3u8`` and ``mpegdash`` libraries; through the edge, Debian's ffprobe reads the clipped stream and
counts its frames. Public ids take the modifiers from the query, signed ids from the token's claims.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import m3u8
import mpegdash.parser
import pytest
import requests

from kinoray.control import playback as delivery
from kinoray.errors import InvalidParametersError
from kinoray.media.captions import hls_subtitle_playlist
from kinoray.media.manifest_rewrite import (
    RenditionFilter,
    TextRendition,
    TimeWindow,
    clip_span,
    retime_subtitle_playlist,
    rewrite_dash_mpd,
    rewrite_hls_master,
    rewrite_hls_media,
)
from kinoray.store.models import PlaybackPolicy
from tests.test_playback import FOUR_RUNG_MASTER, assert_error, frame_count, packaged_asset, publish
from tests.test_playback_signed import mint

#: The packaged asset: 6 s at 30 fps, 2 s segments, 480p and 240p rungs.
SEGMENT, DURATION, FPS = 2, 6, 30


@pytest.fixture(scope="module")
def media(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return packaged_asset(media_dir, tmp_path_factory.getbasetemp())[1]


def _public() -> delivery.Playback:
    return delivery.Playback("p", "a", PlaybackPolicy.PUBLIC, "assets/a/media")


def _signed(**claims: object) -> delivery.Playback:
    return delivery.Playback("p", "a", PlaybackPolicy.SIGNED, "assets/a/media", token="t",
                             claims={"exp": 2**31, **claims})


# --- pure: manifests cut over the segment grid ------------------------------------------------------------


@pytest.mark.parametrize(("window", "kept"), [
    (TimeWindow(Fraction(3), Fraction(5)), [1, 2]),  # 3..5 overlaps [2,4) and [4,6)
    (TimeWindow(Fraction(2), Fraction(4)), [1]),  # exactly one segment: its neighbours only touch it
    (TimeWindow(start=Fraction(5)), [2]),
    (TimeWindow(end=Fraction(1, 2)), [0]),
    (TimeWindow(Fraction(0), Fraction(100)), [0, 1, 2]),
])
def test_media_playlist_keeps_the_segments_overlapping_the_window(media: Path, window: TimeWindow,
                                                                 kept: list[int]) -> None:
    source = (media / "480p" / "index.m3u8").read_text()
    whole = m3u8.loads(source)
    assert [round(s.duration, 3) for s in whole.segments] == [SEGMENT] * 3
    cut = m3u8.loads(rewrite_hls_media(source, query="?token=T", window=window))
    assert [s.uri for s in cut.segments] == [f"{whole.segments[i].uri}?token=T" for i in kept]
    assert cut.media_sequence == kept[0] and cut.is_endlist
    assert cut.segment_map[0].uri == "init.mp4?token=T"
    starts = [SEGMENT * i for i in kept]
    # every kept segment overlaps the window, and the window lies inside what is kept
    assert all(window.overlaps(Fraction(t), Fraction(t + SEGMENT)) for t in starts)
    assert (window.start or 0) >= starts[0] and min(window.end or DURATION, DURATION) <= starts[-1] + SEGMENT
    # the clip's length (what its subtitle playlist is listed for) is what the cut playlist lists
    assert clip_span(source, window) == sum(Fraction(s.duration).limit_denominator(1000) for s in cut.segments)
    subtitles = m3u8.loads(retime_subtitle_playlist(hls_subtitle_playlist("en.vtt", DURATION), clip_span(
        source, window)))
    assert [(s.uri, s.duration) for s in subtitles.segments] == [("en.vtt", SEGMENT * len(kept))]
    assert subtitles.target_duration == SEGMENT * len(kept) and subtitles.is_endlist


def test_a_window_past_the_end_is_refused(media: Path) -> None:
    with pytest.raises(ValueError, match="past the asset's end"):
        rewrite_hls_media((media / "480p" / "index.m3u8").read_text(), window=TimeWindow(start=Fraction(7)))
    with pytest.raises(ValueError, match="past the asset's end"):
        rewrite_dash_mpd((media / "manifest.mpd").read_text(), prefix="P/", window=TimeWindow(start=Fraction(6)))
    with pytest.raises(ValueError):
        TimeWindow(Fraction(4), Fraction(4))


def test_mpd_timelines_are_cut_on_the_same_grid(media: Path) -> None:
    out = rewrite_dash_mpd((media / "manifest.mpd").read_text(), prefix="P/", query="?token=T",
                           window=TimeWindow(Fraction(3), Fraction(5)))
    mpd = mpegdash.parser.MPEGDASHParser.parse(out)
    assert mpd.media_presentation_duration == "PT4.000S"
    video, audio = mpd.periods[0].adaptation_sets[:2]
    for representation in video.representations:
        template = representation.segment_templates[0]
        entries = template.segment_timelines[0].Ss
        assert [(s.t, s.d) for s in entries] == [(template.timescale * 2, template.timescale * 2),
                                                 (template.timescale * 4, template.timescale * 2)]
        assert template.start_number == 2 and template.presentation_time_offset == template.timescale * 2
        assert template.media.endswith("?token=T")
    audio_template = audio.representations[0].segment_templates[0]
    assert audio_template.start_number == 2 and len(audio_template.segment_timelines[0].Ss) == 2


def test_master_carries_the_window_on_every_playlist_uri() -> None:
    out = m3u8.loads(rewrite_hls_master(FOUR_RUNG_MASTER, prefix="PID/", query="?token=T",
                                        window=TimeWindow(Fraction(3, 2), Fraction(10))))
    for uri in [p.uri for p in out.playlists] + [m.uri for m in out.media]:
        query = parse_qs(urlsplit(uri).query)
        assert query == {"token": ["T"], "asset_start_time": ["1.5"], "asset_end_time": ["10"]}, uri


TRACKS = (TextRendition("A" * 32, "English", "en", uri="text/a.m3u8", vtt_uri="text/a.vtt"),
          TextRendition("B" * 32, "Français", "fr-CA", uri="text/b.m3u8", vtt_uri="text/b.vtt"),
          TextRendition("C" * 32, "Français (France)", "fr-FR", uri="text/c.m3u8", vtt_uri="text/c.vtt"))


@pytest.mark.parametrize(("language", "default"), [
    (None, None), ("en", "English"), ("EN", "English"), ("fr-FR", "Français (France)"), ("fr", "Français"),
    ("en-GB", "English"), ("de", None),
])
def test_default_subtitles_lang_marks_one_rendition_default(language: str | None, default: str | None) -> None:
    out = m3u8.loads(rewrite_hls_master(FOUR_RUNG_MASTER, prefix="P/", subtitles=TRACKS,
                                        default_subtitles_lang=language))
    subtitles = [m for m in out.media if m.type == "SUBTITLES"]
    assert [m.name for m in subtitles if m.default == "YES"] == ([default] if default else [])
    assert all(m.autoselect == "YES" for m in subtitles) and len(subtitles) == 3


# --- modifiers from the query or the claims ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["270p", "360p", "480p", "540p", "720p", "1080p", "1440p", "2160p"])
def test_every_mux_resolution_is_accepted_both_ways(value: str) -> None:
    size = int(value[:-1])
    assert delivery.playback_modifiers(_public(), {"max_resolution": value}).selection == \
        RenditionFilter(max_resolution=size)
    assert delivery.playback_modifiers(_signed(min_resolution=value), {}).selection == \
        RenditionFilter(min_resolution=size)


def test_modifiers_from_claims_take_numbers_as_mux_jwt_writes_them() -> None:
    modifiers = delivery.playback_modifiers(
        _signed(asset_start_time=10, asset_end_time=12.5, default_subtitles_lang="en-US", redundant_streams=True,
                rendition_order="desc"), {"asset_start_time": "0"})
    assert modifiers.window == TimeWindow(Fraction(10), Fraction(25, 2))
    assert modifiers.default_subtitles_lang == "en-US" and modifiers.redundant_streams is True
    assert modifiers.selection == RenditionFilter(descending=True)
    public = delivery.playback_modifiers(_public(), {"asset_end_time": "4.25", "redundant_streams": "false"})
    assert public.window == TimeWindow(end=Fraction(17, 4)) and public.redundant_streams is False


@pytest.mark.parametrize("query", [
    {"max_resolution": "1000p"}, {"min_resolution": "1080p", "max_resolution": "720p"},
    {"asset_start_time": "-1"}, {"asset_start_time": "abc"}, {"asset_end_time": "0"}, {"asset_start_time": ""},
    {"asset_start_time": "5", "asset_end_time": "5"}, {"asset_start_time": "1e3"},
    {"default_subtitles_lang": "english please"}, {"redundant_streams": "yes"}, {"rendition_order": "asc"},
])
def test_bad_modifiers_are_typed_400s(query: dict[str, str]) -> None:
    with pytest.raises(InvalidParametersError):
        delivery.playback_modifiers(_public(), query)


# --- through the edge -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def published(api, media: Path):
    _, (public_id, signed_id) = publish(api, media, policies=(PlaybackPolicy.PUBLIC, PlaybackPolicy.SIGNED))
    created = api.client.post(f"{api.url}/system/v1/signing-keys", timeout=10)
    assert created.status_code == 201, created.text
    import base64

    key = created.json()["data"]
    return api, public_id, signed_id, key["id"], base64.b64decode(key["private_key"])


def _duration(url: str) -> float:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url],
                          capture_output=True, text=True, timeout=120, check=True)
    return float(done.stdout.strip())


def test_instant_clip_of_a_public_id_plays_the_kept_segments(published) -> None:
    api, public_id, _, _, _ = published
    url = f"{api.edge_url}/{public_id}.m3u8?asset_start_time=2.5&asset_end_time=3.5"
    master = m3u8.loads(requests.get(url, timeout=10).text)
    variant = urljoin(url, master.playlists[0].uri)
    assert parse_qs(urlsplit(variant).query) == {"asset_start_time": ["2.5"], "asset_end_time": ["3.5"]}
    media = m3u8.loads(requests.get(variant, timeout=10).text)
    assert [s.uri for s in media.segments] == ["seg_00002.m4s"] and media.media_sequence == 1
    # Debian's ffprobe, following the master: one 2 s segment, within a segment of the 1 s asked for
    assert abs(_duration(url) - SEGMENT) < 0.1 and abs(_duration(url) - 1.0) <= SEGMENT
    assert frame_count(url) == SEGMENT * FPS
    mpd_url = f"{api.edge_url}/{public_id}.mpd?asset_start_time=2.5&asset_end_time=3.5"
    mpd = mpegdash.parser.MPEGDASHParser.parse(requests.get(mpd_url, timeout=10).text)
    assert mpd.media_presentation_duration == "PT2.000S"
    assert frame_count(mpd_url) == SEGMENT * FPS and abs(_duration(mpd_url) - SEGMENT) < 0.1  # ffprobe's DASH reader
    late = requests.get(f"{api.edge_url}/{public_id}/480p/index.m3u8?asset_start_time=60", timeout=10)
    assert_error(late, 400, "invalid_parameters")
    assert_error(requests.get(f"{api.edge_url}/{public_id}.m3u8?asset_end_time=-3", timeout=10), 400,
                 "invalid_parameters")
    # the modifiers Mux's SDKs send that kinoray used to refuse
    for value, heights in (("270p", [240]), ("480p", [240, 480])):
        answer = requests.get(f"{api.edge_url}/{public_id}.m3u8?max_resolution={value}&redundant_streams=true",
                              timeout=10)
        assert answer.status_code == 200, answer.text
        assert [p.stream_info.resolution[1] for p in m3u8.loads(answer.text).playlists] == heights


def test_instant_clip_of_a_signed_id_comes_from_the_claims(published) -> None:
    api, _, signed_id, key_id, private_pem = published
    token = mint(key_id, private_pem, signed_id, asset_start_time=4, asset_end_time=6)
    url = f"{api.edge_url}/{signed_id}.m3u8?token={token}&asset_start_time=0"  # query modifiers are ignored
    master = m3u8.loads(requests.get(url, timeout=10).text)
    variant = urljoin(url, master.playlists[0].uri)
    assert set(parse_qs(urlsplit(variant).query)) == {"token"}  # the window travels in the token
    media = m3u8.loads(requests.get(variant, timeout=10).text)
    assert [s.uri.split("?")[0] for s in media.segments] == ["seg_00003.m4s"]
    assert abs(_duration(url) - SEGMENT) < 0.1
    wrong = mint(key_id, private_pem, signed_id, asset_start_time="soon")
    assert_error(requests.get(f"{api.edge_url}/{signed_id}.m3u8?token={wrong}", timeout=10), 400,
                 "invalid_parameters")


def test_default_subtitles_lang_through_the_edge(api, media: Path) -> None:
    from kinoray.store.models import Asset

    asset_id, (public_id,) = publish(api, media)
    with api.platform.db.session() as session:
        session.get_one(Asset, asset_id).tracks = [
            {"id": track.track_id, "type": "text", "status": "ready", "name": track.name,
             "language_code": track.language, "text_type": "subtitles"} for track in TRACKS]
    url = f"{api.edge_url}/{public_id}.m3u8"
    for language, default in (("fr", "Français"), ("fr-FR", "Français (France)"), (None, None)):
        answer = requests.get(url, params={"default_subtitles_lang": language} if language else {}, timeout=10)
        assert answer.status_code == 200, answer.text
        subtitles = [m for m in m3u8.loads(answer.text).media if m.type == "SUBTITLES"]
        assert len(subtitles) == 3
        assert [m.name for m in subtitles if m.default == "YES"] == ([default] if default else [])
    assert_error(requests.get(url, params={"default_subtitles_lang": "x" * 40}, timeout=10), 400,
                 "invalid_parameters")
