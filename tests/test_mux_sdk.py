"""Mux's own Python SDK (PyPI ``mux-python``, unmodified, pointed at kinoray's base URL) as the test client.

Every answer is deserialized by the SDK's own models, which check Mux's enums on the way in (``client_side_validation``
is on by default): a field kinoray answers outside Mux's values, or a request field kinoray refuses although the
SDK always sends it, fails here. What the models cannot see is checked independently: the stream plays through
the edge with a token minted as ``mux.jwt`` mints it (``kid`` in the claims), and the static rendition's size is
read back with Debian's ``ffprobe``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import mux_python as mux
import pytest
import requests

from kinoray.media.synthetic import generate_clip
from tests.compat import mux_python_client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The API with ``file://`` inputs and the job runner (on a private local Ray), so assets become ready."""
    from tests.api_server import api_with_runner

    with api_with_runner(api_backend.new_url(), tmp_path_factory.mktemp("mux-sdk")) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(api) -> mux.ApiClient:
    return mux_python_client(api.url, api.auth)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clip(tmp_path_factory.mktemp("mux-sdk-clip") / "clip.mp4", width=640, height=360, fps=30,
                         seconds=4)


def _wait_ready(assets: mux.AssetsApi, asset_id: str, timeout: float = 240) -> mux.Asset:
    deadline = time.monotonic() + timeout
    while True:
        asset = assets.get_asset(asset_id).data
        if asset.status in ("ready", "errored"):
            return asset
        assert time.monotonic() < deadline, f"asset {asset_id} still {asset.status}"
        time.sleep(0.3)


def _refusal(error: mux.ApiException) -> list[str]:
    return list(json.loads(error.body)["error"]["messages"])


def test_an_asset_created_as_the_sdk_sends_it_becomes_ready_with_mux_shaped_fields(api, sdk, clip: Path) -> None:
    assets = mux.AssetsApi(sdk)
    # the SDK always sends normalize_audio and copy_overlays; encoding_tier is Mux's deprecated video_quality
    request = mux.CreateAssetRequest(
        inputs=[mux.InputSettings(url=clip.as_uri())], playback_policies=[mux.PlaybackPolicy.PUBLIC],
        encoding_tier="smart", max_resolution_tier="1080p", passthrough="sdk", normalize_audio=True,
        static_renditions=[mux.CreateStaticRenditionRequest(resolution="highest")])
    created = assets.create_asset(request).data
    assert created.status == "preparing" and created.passthrough == "sdk"
    assert (created.video_quality, created.encoding_tier) == ("plus", "smart")
    assert created.master_access == "none" and created.normalize_audio is True
    assert created.ingest_type == "on_demand_url" and created.is_live is False

    asset = _wait_ready(assets, created.id)
    assert asset.status == "ready", asset.errors
    assert asset.max_stored_resolution == "SD" and asset.resolution_tier == "720p"
    video = next(track for track in asset.tracks if track.type == "video")
    audio = next(track for track in asset.tracks if track.type == "audio")
    assert (video.max_width, video.max_height, video.status) == (640, 360, "ready")
    assert audio.status == "ready" and audio.primary is True
    while asset.static_renditions.status == "preparing":  # made by the runner once the asset is ready
        time.sleep(0.2)
        asset = assets.get_asset(asset.id).data
    assert asset.static_renditions.status == "ready"
    [file] = asset.static_renditions.files
    assert (file.name, file.ext, file.status, file.width, file.height) == ("highest.mp4", "mp4", "ready", 640, 360)
    assert (file.type, file.resolution, file.resolution_tier) == ("standard", "highest", "720p") and file.id
    stored = Path(api.settings.storage_url) / "assets" / asset.id / "media" / file.name
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height", "-of", "csv=p=0", str(stored)],
                           capture_output=True, text=True, timeout=60, check=True)
    assert probe.stdout.strip() == "640,360" and int(file.filesize) == stored.stat().st_size

    # input info: the stored source as Mux describes it, against Debian's ffprobe on the same bytes
    [info] = assets.get_asset_input_info(asset.id).data
    assert info.settings.url == clip.as_uri()
    source = Path(api.settings.storage_url) / "assets" / asset.id / "input"
    streams = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json",
                                         str(source)], capture_output=True, text=True, timeout=60,
                                        check=True).stdout)
    assert info.file.container_format == streams["format"]["format_name"]
    by_type = {track.type: track for track in info.file.tracks}
    for stream in streams["streams"]:
        track = by_type[stream["codec_type"]]
        assert track.encoding == stream["codec_name"]
        assert abs(track.duration - float(stream["duration"])) < 0.05
        if stream["codec_type"] == "video":
            num, den = map(int, stream["avg_frame_rate"].split("/"))
            assert (track.width, track.height, track.frame_rate) == (stream["width"], stream["height"],
                                                                     round(num / den, 3))
        else:
            assert (track.sample_rate, track.channels) == (int(stream["sample_rate"]), stream["channels"])

    # the deprecated spellings the SDK's older callers use: input and playback_policy
    legacy = assets.create_asset(mux.CreateAssetRequest(
        input=[mux.InputSettings(url=clip.as_uri())], playback_policy=[mux.PlaybackPolicy.SIGNED])).data
    assert [p.policy for p in legacy.playback_ids] == ["signed"]
    assets.delete_asset(legacy.id)
    with pytest.raises(mux.ApiException) as gone:
        assets.get_asset(legacy.id)
    assert gone.value.status == 404


def test_what_kinoray_cannot_do_yet_is_refused_by_name_not_dropped(api, sdk, clip: Path) -> None:
    assets = mux.AssetsApi(sdk)
    for settings, named, why in (({"start_time": 1.0, "end_time": 2.0}, "start_time, end_time", "only for clips"),
                                 ({"overlay_settings": mux.InputSettingsOverlaySettings(width="10%")},
                                  "overlay_settings", "not supported")):
        with pytest.raises(mux.ApiException) as refused:
            assets.create_asset(mux.CreateAssetRequest(inputs=[mux.InputSettings(url=clip.as_uri(), **settings)]))
        assert refused.value.status == 400
        assert any(named in message and why in message for message in _refusal(refused.value))
    with pytest.raises(mux.ApiException) as drm:
        assets.create_asset(mux.CreateAssetRequest(
            inputs=[mux.InputSettings(url=clip.as_uri())],
            advanced_playback_policies=[mux.CreatePlaybackIDRequest(policy="drm")]))
    assert drm.value.status == 400 and any("DRM" in message for message in _refusal(drm.value))


def test_direct_uploads_round_trip_through_the_sdk_models(api, sdk) -> None:
    uploads = mux.DirectUploadsApi(sdk)
    made = uploads.create_direct_upload(mux.CreateUploadRequest(
        cors_origin="*", new_asset_settings=mux.CreateAssetRequest(playback_policies=[mux.PlaybackPolicy.PUBLIC],
                                                                   video_quality="basic"))).data
    assert made.status == "waiting" and made.url.startswith(api.settings.public_url)
    assert made.new_asset_settings.video_quality == "basic"
    # kinoray's own 720p tier (over plain HTTP: the SDK cannot even build it) must not break the SDK's reads
    raw = api.client.post(f"{api.url}/video/v1/uploads", json={
        "cors_origin": "*", "new_asset_settings": {"max_resolution_tier": "720p"}}, timeout=10)
    assert raw.status_code == 201, raw.text
    assert raw.json()["data"]["kinoray_max_resolution_tier"] == "720p"
    fetched = uploads.get_direct_upload(raw.json()["data"]["id"]).data
    assert fetched.new_asset_settings.max_resolution_tier == "1080p"
    listed = uploads.list_direct_uploads(limit=100).data
    assert {made.id, fetched.id} <= {upload.id for upload in listed}
    uploads.cancel_direct_upload(made.id)
    assert uploads.get_direct_upload(made.id).data.status == "cancelled"


def test_numbered_pages_end(api, sdk) -> None:
    """Auto-paging SDKs ask page 1, 2, ... until a page comes back short: every list honours ``page``."""
    keys = mux.SigningKeysApi(sdk)
    made = {keys.create_signing_key().data.id for _ in range(3)}
    seen: list[str] = []
    for page in range(1, 100):
        batch = keys.list_signing_keys(limit=2, page=page).data
        seen += [key.id for key in batch]
        if len(batch) < 2:
            break
    assert made <= set(seen) and len(seen) == len(set(seen)), seen
    uploads = mux.DirectUploadsApi(sdk)
    for _ in range(2):
        uploads.create_direct_upload(mux.CreateUploadRequest(cors_origin="*"))
    first, second = (uploads.list_direct_uploads(limit=1, page=page).data for page in (1, 2))
    assert first and second and first[0].id != second[0].id
    for key_id in made:
        keys.delete_signing_key(key_id)


def test_signed_playback_with_the_key_named_in_the_claims_as_mux_jwt_does(api, sdk, clip: Path) -> None:
    assets = mux.AssetsApi(sdk)
    asset = _wait_ready(assets, assets.create_asset(mux.CreateAssetRequest(
        inputs=[mux.InputSettings(url=clip.as_uri())], playback_policies=[mux.PlaybackPolicy.SIGNED])).data.id)
    [playback] = asset.playback_ids
    key = mux.SigningKeysApi(sdk).create_signing_key().data
    import base64

    private = base64.b64decode(key.private_key)
    claims = {"sub": playback.id, "aud": "v", "exp": int(time.time()) + 600}
    in_claims = jwt.encode({**claims, "kid": key.id}, private, algorithm="RS256")  # mux.jwt's shape
    assert "kid" not in jwt.get_unverified_header(in_claims)
    answer = requests.get(f"{api.edge_url}/{playback.id}.m3u8", params={"token": in_claims}, timeout=10)
    assert answer.status_code == 200 and answer.text.startswith("#EXTM3U"), answer.text
    nameless = jwt.encode(claims, private, algorithm="RS256")
    refused = requests.get(f"{api.edge_url}/{playback.id}.m3u8", params={"token": nameless}, timeout=10)
    assert refused.status_code == 403 and "kid" in refused.text
    mux.SigningKeysApi(sdk).delete_signing_key(key.id)


def _sdk_fields(model: Any) -> set[str]:
    return set(model.attribute_map.values())


def test_every_asset_field_kinoray_answers_is_one_the_sdk_knows_or_named_for_kinoray(api, sdk) -> None:
    listed = api.client.get(f"{api.url}/video/v1/assets", params={"limit": 100}, timeout=10).json()["data"]
    assert listed
    known = _sdk_fields(mux.Asset)
    for asset in listed:
        extra = set(asset) - known
        assert extra <= {"updated_at", "video_codec", "encoder_backend", "kinoray_max_resolution_tier"}, extra
        assert {"id", "status", "created_at", "max_resolution_tier", "video_quality", "encoding_tier",
                "master_access", "mp4_support", "playback_ids", "tracks", "ingest_type", "is_live"} <= set(asset)
