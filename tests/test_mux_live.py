"""Mux's live-streams API driven by Mux's own SDKs (mux-python 5.1.2 unmodified; @mux/mux-node 15.3.0 through
``tests/js/mux_node_live.mjs``), every answer deserialized by the SDK's models (which check Mux's enums). The
recording path runs for real: the control functions the live runtime calls (:mod:`kinoray.control.live`) are
called with an FLV made by Debian's ``ffmpeg``, the job runner turns the recording into an asset, Debian's
``ffprobe`` decodes it through the edge, and the webhooks arrive signed at a local receiver.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mux_python as mux
import pytest
from mux_python.exceptions import NotFoundException

from kinoray.control.live import authorize_publish, publish_active, publish_ended
from kinoray.control.webhooks import verify
from tests.api_server import Receiver
from tests.compat import mux_python_client, record
from tests.oracles import ffprobe_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(api_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The API with its job runner (recordings become assets) and webhooks to 127.0.0.1 allowed."""
    from tests.api_server import api_with_runner

    with api_with_runner(api_backend.new_url(), tmp_path_factory.mktemp("mux-live"),
                         api={"allow_file_inputs": True, "allow_private_inputs": True},
                         serve={"poll_seconds": 0.1, "sweep_seconds": 1}) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(api: Any) -> mux.ApiClient:
    return mux_python_client(api.url, api.auth)


@pytest.fixture(scope="module")
def receiver(api: Any) -> Iterator[tuple[Receiver, str]]:
    """The receiver and its endpoint's signing secret."""
    receiver = Receiver()
    answer = api.client.post(f"{api.url}/system/v1/webhook-endpoints", json={"url": receiver.url}, timeout=10)
    assert answer.status_code == 201, answer.text
    yield receiver, answer.json()["data"]["secret"]
    receiver.close()


def test_every_live_stream_operation_answers_what_the_sdk_models_accept(api: Any, sdk: mux.ApiClient) -> None:
    live = mux.LiveStreamsApi(sdk)
    request = mux.CreateLiveStreamRequest(
        playback_policies=[mux.PlaybackPolicy.PUBLIC],
        new_asset_settings=mux.CreateAssetRequest(playback_policies=[mux.PlaybackPolicy.PUBLIC]),
        reconnect_window=30, latency_mode="standard", passthrough="sdk", max_continuous_duration=3600,
        simulcast_targets=[mux.CreateSimulcastTargetRequest(url="rtmp://live.example.com/app", stream_key="abc")],
        meta=mux.LiveStreamMetadata(title="launch"))
    created = live.create_live_stream(request).data
    assert isinstance(created, mux.LiveStream) and created.status == "idle" and len(created.stream_key) >= 40
    assert (created.reconnect_window, created.latency_mode, created.max_continuous_duration) == (30, "standard",
                                                                                                   3600)
    assert created.passthrough == "sdk" and created.meta.title == "launch"
    assert [p.policy for p in created.playback_ids] == ["public"]
    [target] = created.simulcast_targets
    assert (target.status, target.url, target.stream_key) == ("idle", "rtmp://live.example.com/app", "abc")
    assert created.new_asset_settings.playback_policies == ["public"]

    got = live.get_live_stream(created.id).data
    assert got.stream_key is None, "only a hash of the key is kept: shown on create and reset only"
    assert got.id == created.id and got.recent_asset_ids == [] and got.active_asset_id is None

    assert created.id in [item.id for item in live.list_live_streams(limit=10, page=1).data]
    assert [item.id for item in live.list_live_streams(stream_key=created.stream_key).data] == [created.id]
    assert [item.id for item in live.list_live_streams(status="idle", limit=100).data].count(created.id) == 1
    assert live.list_live_streams(stream_key="no-such-key").data == []

    updated = live.update_live_stream(created.id, mux.UpdateLiveStreamRequest(
        passthrough="changed", reconnect_window=120, latency_mode="low",
        new_asset_settings=mux.UpdateLiveStreamNewAssetSettings(video_quality="premium"))).data
    assert (updated.passthrough, updated.reconnect_window, updated.latency_mode) == ("changed", 120, "low")
    assert updated.new_asset_settings.video_quality == "premium"

    signed = live.create_live_stream_playback_id(
        created.id, mux.CreatePlaybackIDRequest(policy=mux.PlaybackPolicy.SIGNED)).data
    assert signed.policy == "signed"
    assert live.get_live_stream_playback_id(created.id, signed.id).data.id == signed.id
    target_of = mux.PlaybackIDApi(sdk).get_asset_or_livestream_id(signed.id).data
    assert (target_of.object.type, target_of.object.id, target_of.policy) == ("live_stream", created.id, "signed")
    live.delete_live_stream_playback_id(created.id, signed.id)
    with pytest.raises(NotFoundException):
        live.get_live_stream_playback_id(created.id, signed.id)

    added = live.create_live_stream_simulcast_target(created.id, mux.CreateSimulcastTargetRequest(
        url="rtmps://push.example.com:443/live", stream_key="k2", passthrough="yt")).data
    assert added.status == "idle" and added.passthrough == "yt"
    assert live.get_live_stream_simulcast_target(created.id, added.id).data.url == "rtmps://push.example.com:443/live"
    live.delete_live_stream_simulcast_target(created.id, added.id)
    with pytest.raises(NotFoundException):
        live.get_live_stream_simulcast_target(created.id, added.id)

    live.disable_live_stream(created.id)
    assert live.get_live_stream(created.id).data.status == "disabled"
    live.enable_live_stream(created.id)
    assert live.get_live_stream(created.id).data.status == "idle"
    live.signal_live_stream_complete(created.id)  # no session: nothing to end

    reset = live.reset_stream_key(created.id).data
    assert reset.stream_key and reset.stream_key != created.stream_key
    assert live.list_live_streams(stream_key=created.stream_key).data == [], "the old key is gone"
    assert authorize_publish(api.platform, created.stream_key) is None

    # Mux's deprecated booleans choose the latency mode (and its reconnect default)
    reduced = live.create_live_stream(mux.CreateLiveStreamRequest(reduced_latency=True)).data
    assert (reduced.latency_mode, reduced.reconnect_window) == ("reduced", 60), "the SDK always sends 60"
    answer = api.client.post(f"{api.url}/video/v1/live-streams", json={"low_latency": True}, timeout=10)
    assert answer.status_code == 201 and answer.json()["data"]["latency_mode"] == "low"
    assert answer.json()["data"]["reconnect_window"] == 0, "Mux's default for reduced and low latency"
    standard = api.client.post(f"{api.url}/video/v1/live-streams", json={}, timeout=10).json()["data"]
    assert (standard["latency_mode"], standard["reconnect_window"], standard["max_continuous_duration"]) == (
        "standard", 60, 43200)

    live.delete_live_stream(created.id)
    with pytest.raises(NotFoundException):
        live.get_live_stream(created.id)
    assert authorize_publish(api.platform, reset.stream_key) is None


@pytest.mark.parametrize(("body", "message"), [
    ({"reconnect_window": 1801}, "reconnect_window"),
    ({"reconnect_window": -1}, "reconnect_window"),
    ({"latency_mode": "instant"}, "latency_mode"),
    ({"max_continuous_duration": 43201}, "max_continuous_duration"),
    ({"max_continuous_duration": 10}, "max_continuous_duration"),
    ({"generated_subtitles": [{"name": "English", "language_code": "en"}]}, "generated_subtitles"),
    ({"simulcast_targets": [{"url": "http://not-rtmp.example.com/"}]}, "url"),
    ({"playback_policies": ["drm"]}, "playback_policies"),
    ({"unknown_field": 1}, "unknown_field"),
])
def test_invalid_live_stream_requests_are_refused_by_name(api: Any, body: dict[str, Any], message: str) -> None:
    answer = api.client.post(f"{api.url}/video/v1/live-streams", json=body, timeout=10)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_parameters" and message in " ".join(error["messages"])
    record("mux-python 5.1.2", "create_live_stream (invalid input refused)", True)


def test_unknown_ids_and_conflicts(api: Any, sdk: mux.ApiClient) -> None:
    live = mux.LiveStreamsApi(sdk)
    for call in (lambda: live.get_live_stream("nope"), lambda: live.enable_live_stream("../etc"),
                 lambda: live.reset_stream_key("x" * 65), lambda: live.delete_live_stream("missing")):
        with pytest.raises(NotFoundException):
            call()
    stream = live.create_live_stream(mux.CreateLiveStreamRequest(playback_policies=["public"])).data
    publish = authorize_publish(api.platform, stream.stream_key)
    assert publish is not None
    with pytest.raises(mux.ApiException) as refused:
        live.create_live_stream_simulcast_target(stream.id, mux.CreateSimulcastTargetRequest(url="rtmp://a.example/x"))
    assert refused.value.status == 409
    with pytest.raises(mux.ApiException) as refused:
        live.update_live_stream(stream.id, mux.UpdateLiveStreamRequest(latency_mode="low"))
    assert refused.value.status == 409
    publish_ended(api.platform, stream.id, "test over")
    live.signal_live_stream_complete(stream.id)
    assert live.get_live_stream(stream.id).data.status == "idle"


def _flv(path: Path, seconds: int) -> bytes:
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
                    "-c:v", "libx264", "-g", "25", "-c:a", "aac", "-f", "flv", str(path)], check=True, timeout=120)
    return path.read_bytes()


def _eventually(check: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_broadcast_becomes_an_asset_with_mux_s_webhooks(api: Any, sdk: mux.ApiClient,
                                                          receiver: tuple[Receiver, str], tmp_path: Path) -> None:
    hooks, secret = receiver
    live, assets = mux.LiveStreamsApi(sdk), mux.AssetsApi(sdk)
    stream = live.create_live_stream(mux.CreateLiveStreamRequest(
        playback_policies=["public"], reconnect_window=600,
        new_asset_settings=mux.CreateAssetRequest(playback_policies=["public"], passthrough="recording"))).data
    publish = authorize_publish(api.platform, stream.stream_key)  # what the RTMP runtime calls on publish
    assert publish is not None and publish.live_stream_id == stream.id
    api.platform.store.put_bytes(_flv(tmp_path / "broadcast.flv", 3), publish.source_key)
    assert publish_active(api.platform, stream.id)

    during = live.get_live_stream(stream.id).data
    assert (during.status, during.active_asset_id) == ("active", publish.asset_id)
    recording = assets.get_asset(publish.asset_id).data
    assert recording.is_live is True and recording.status == "preparing" and recording.progress.state == "live"
    assert (recording.live_stream_id, recording.ingest_type, recording.passthrough) == (stream.id, "live_rtmp",
                                                                                        "recording")

    live.signal_live_stream_complete(stream.id)  # the runtime is told to stop its publisher, then reports it
    publish_ended(api.platform, stream.id, None)
    after = live.get_live_stream(stream.id).data
    assert (after.status, after.active_asset_id, after.recent_asset_ids) == ("idle", None, [publish.asset_id])

    asset = api.wait_asset(publish.asset_id, timeout=240)
    assert asset["status"] == "ready", asset.get("errors")
    ready = assets.get_asset(publish.asset_id).data
    assert ready.is_live is False and ready.live_stream_id == stream.id and 2.8 <= ready.duration <= 3.3
    playback_id = ready.playback_ids[0].id
    probe = ffprobe_json(f"{api.edge_url}/{playback_id}.m3u8", "-count_frames", "-select_streams", "v:0",
                         "-show_streams")
    assert int(probe["streams"][0]["nb_read_frames"]) == 75, "3 s at 25 fps, decoded by ffprobe"

    wanted = ["video.live_stream.created", "video.live_stream.connected", "video.live_stream.recording",
              "video.live_stream.active", "video.live_stream.disconnected", "video.live_stream.idle"]
    # deliveries run in parallel, so they may arrive in any order (as Mux's): compare what arrived
    _eventually(lambda: sorted(hooks.types_for(stream.id)) == sorted(wanted), 60,
                f"live webhooks: {hooks.types_for(stream.id)}")
    _eventually(lambda: sorted(hooks.types_for(publish.asset_id)) == [
        "video.asset.created", "video.asset.live_stream_completed", "video.asset.ready"], 60,
                f"asset webhooks: {hooks.types_for(publish.asset_id)}")
    for headers, body in hooks.received:
        verify(secret, body, headers["mux-signature"])
    completed = next(json.loads(body) for _, body in hooks.received
                     if json.loads(body)["type"] == "video.asset.live_stream_completed")
    assert completed["data"]["live_stream_id"] == stream.id and completed["data"]["status"] == "ready"


def test_mux_node_sdk_runs_every_live_stream_operation(api: Any) -> None:
    """``tests/js/mux_node_live.mjs``: @mux/mux-node 15.3.0, unmodified, for every live-stream operation."""
    from tests.js_clients import run_node

    token_id, token_secret = api.auth
    run = run_node("mux_node_live.mjs", {"api": api.url, "tokenId": token_id, "tokenSecret": token_secret},
                   timeout=300)
    for operation in run["operations"]:
        record("@mux/mux-node 15.3.0", operation["name"], operation["ok"], operation.get("error", ""))
    failed = [operation for operation in run["operations"] if not operation["ok"]]
    assert failed == [], json.dumps(failed, indent=1)
    assert len(run["operations"]) == 17
    facts = run["facts"]
    assert (facts["createdStatus"], facts["createdLatency"], facts["createdWindow"]) == ("idle", "low", 45)
    assert facts["createdKey"] and facts["keyOnRetrieve"] is None
    assert facts["resetKey"] and facts["resetKey"] != facts["createdKey"]
    assert facts["listed"] and facts["byKey"] == [facts["id"]]
    assert facts["updated"] == ["node-changed", 90, 7200]
    assert facts["playbackPolicy"] == "signed"
    assert facts["playbackObject"] == {"type": "live_stream", "id": facts["id"]}
    assert facts["deletedPlaybackId"] == "NotFoundError 404" and facts["afterDelete"] == "NotFoundError 404"
    assert facts["simulcastStatus"] == "idle" and facts["disabledStatus"] == "disabled"
    assert facts["invalidWindow"] == "BadRequestError 400"
