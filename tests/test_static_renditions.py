"""Static renditions, the legacy ``mp4_support`` switch and master access, driven through Mux's own Python SDK
(``mux-python``, unmodified) against a real runner, checked independently.

Every answer is deserialized by the SDK's models (Mux's enums checked on the way in). Each MP4/M4A is fetched
through the delivery edge and read by Debian's ``ffprobe`` (streams, picture size, duration against the asset's),
its top-level boxes are walked to see ``moov`` before ``mdat`` (faststart), byte ranges are compared with the
whole file, and the webhooks are received by a local HTTP endpoint. The lease model of the rendition work is
checked without Ray or HTTP, with a fake clock.
"""

from __future__ import annotations

import json
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mux_python as mux
import pytest
import requests

from kinoray.media.synthetic import generate_clip
from tests.api_server import eventually
from tests.compat import mux_python_client
from tests.test_serve_e2e import Receiver

MASTER_SECONDS = 12


class Hooks(Receiver):
    """The webhook receiver of ``tests/test_serve_e2e.py``, read by asset and event type prefix."""

    def of(self, asset_id: str, prefix: str) -> list[dict[str, Any]]:
        events = [json.loads(body) for _, body in list(self.received)]
        return [event for event in events if event["type"].startswith(prefix) and event["object"]["id"] == asset_id]


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.api_server import api_with_runner

    with api_with_runner(api_backend.new_url(), tmp_path_factory.mktemp("static"),
                         api={"allow_file_inputs": True, "allow_private_inputs": True,
                              "master_access_seconds": MASTER_SECONDS},
                         serve={"poll_seconds": 0.1, "sweep_seconds": 0.5}) as server:
        yield server


@pytest.fixture(scope="module")
def hooks(api) -> Iterator[Hooks]:
    receiver = Hooks()
    made = api.client.post(f"{api.url}/system/v1/webhook-endpoints", json={"url": receiver.url}, timeout=10)
    assert made.status_code == 201, made.text
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def assets(api) -> mux.AssetsApi:
    return mux.AssetsApi(mux_python_client(api.url, api.auth))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clip(tmp_path_factory.mktemp("static-clip") / "clip.mp4", width=640, height=360, fps=30,
                         seconds=4)


def _wait(assets: mux.AssetsApi, asset_id: str, *, renditions: bool = True, timeout: float = 300) -> mux.Asset:
    """The asset once it is ready or errored (and, with ``renditions``, no static rendition is preparing)."""
    deadline = time.monotonic() + timeout
    while True:
        asset = assets.get_asset(asset_id).data
        settled = asset.status in ("ready", "errored")
        if settled and renditions and asset.static_renditions is not None:
            settled = all(file.status != "preparing" for file in asset.static_renditions.files or ()) \
                and asset.static_renditions.status != "preparing"
        if settled:
            return asset
        assert time.monotonic() < deadline, f"asset {asset_id}: {asset.status}, {asset.static_renditions}"
        time.sleep(0.3)


def _boxes(data: bytes) -> list[str]:
    """Top-level ISO BMFF box types, in file order."""
    types, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        types.append(kind.decode("latin-1"))
        if size < 8:
            break
        offset += size
    return types


def _ffprobe(path: Path) -> dict[str, Any]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def _check_file(api: Any, playback_id: str, file: mux.StaticRendition, *, duration: float,
                video: tuple[int, int] | None, tmp: Path) -> None:
    """Download the rendition through the edge and check it independently."""
    url = f"{api.edge_url}/{playback_id}/{file.name}"

    def fetched() -> requests.Response:  # the edge sees a new rendition within its cache bound (2 s)
        answer = requests.get(url, timeout=30)
        assert answer.status_code == 200, (file.name, answer.text[:200])
        return answer

    got = eventually(fetched)
    assert got.headers["Content-Type"] == ("audio/mp4" if file.ext == "m4a" else "video/mp4")
    assert int(file.filesize) == len(got.content)
    boxes = _boxes(got.content)
    assert boxes[0] == "ftyp" and boxes.index("moov") < boxes.index("mdat"), boxes  # faststart
    local = tmp / file.name
    local.write_bytes(got.content)
    probe = _ffprobe(local)
    kinds = sorted(stream["codec_type"] for stream in probe["streams"])
    assert kinds == (["audio", "video"] if video else ["audio"]), (file.name, kinds)
    assert abs(float(probe["format"]["duration"]) - duration) < 0.1, (file.name, probe["format"]["duration"])
    if video:
        stream = next(s for s in probe["streams"] if s["codec_type"] == "video")
        assert (stream["width"], stream["height"]) == video == (file.width, file.height)
    assert abs(file.bitrate - len(got.content) * 8 / float(probe["format"]["duration"])) < 0.02 * file.bitrate
    ranged = requests.get(url, headers={"Range": "bytes=100-1099"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == got.content[100:1100]
    assert ranged.headers["Content-Range"] == f"bytes 100-1099/{len(got.content)}"


@pytest.mark.slow
def test_static_renditions_per_resolution_through_the_sdk(api, hooks, assets, clip, tmp_path) -> None:
    created = assets.create_asset(mux.CreateAssetRequest(
        inputs=[mux.InputSettings(url=clip.as_uri())], playback_policies=[mux.PlaybackPolicy.PUBLIC],
        static_renditions=[mux.CreateStaticRenditionRequest(resolution=resolution, passthrough=f"p-{resolution}")
                           for resolution in ("highest", "audio-only", "480p", "270p")])).data
    assert created.static_renditions.status == "preparing"
    assert {(f.name, f.status, f.type) for f in created.static_renditions.files} == {
        ("highest.mp4", "preparing", "standard"), ("audio.m4a", "preparing", "standard"),
        ("480p.mp4", "preparing", "advanced"), ("270p.mp4", "preparing", "advanced")}
    asset = _wait(assets, created.id)
    assert asset.status == "ready", asset.errors
    assert asset.static_renditions.status == "ready"
    files = {file.name: file for file in asset.static_renditions.files}
    [playback] = asset.playback_ids
    # the source is 640x360: 480p would be an upscale, 270p is no rung of kinoray's ladder (no re-encoding)
    assert (files["480p.mp4"].status, files["270p.mp4"].status) == ("skipped", "skipped")
    assert files["480p.mp4"].passthrough == "p-480p"
    for name in ("480p.mp4", "270p.mp4"):
        assert requests.get(f"{api.edge_url}/{playback.id}/{name}", timeout=10).status_code == 404
    highest, audio = files["highest.mp4"], files["audio.m4a"]
    assert (highest.status, highest.resolution, highest.resolution_tier) == ("ready", "highest", "720p")
    assert (audio.status, audio.resolution, audio.resolution_tier, audio.ext) == ("ready", "audio-only",
                                                                                 "audio-only", "m4a")
    _check_file(api, playback.id, highest, duration=asset.duration, video=(640, 360), tmp=tmp_path)
    _check_file(api, playback.id, audio, duration=asset.duration, video=None, tmp=tmp_path)

    # later, on the ready asset: a resolution the ladder has, made by remuxing the 360p rung
    later = assets.create_asset_static_rendition(
        asset.id, mux.CreateStaticRenditionRequest(resolution="360p", passthrough="later")).data
    assert (later.name, later.status, later.type, later.resolution) == ("360p.mp4", "preparing", "advanced", "360p")
    with pytest.raises(mux.ApiException) as twice:
        assets.create_asset_static_rendition(asset.id, mux.CreateStaticRenditionRequest(resolution="360p"))
    assert twice.value.status == 409
    asset = _wait(assets, asset.id)
    made = next(file for file in asset.static_renditions.files if file.id == later.id)
    assert made.status == "ready" and made.passthrough == "later"
    _check_file(api, playback.id, made, duration=asset.duration, video=(640, 360), tmp=tmp_path)

    # webhooks: one created per rendition, then ready or skipped, each naming its asset and file
    def arrived() -> dict[str, list[str]]:
        received: dict[str, list[str]] = {}
        for event in hooks.of(asset.id, "video.asset.static_rendition."):
            assert event["data"]["asset_id"] == asset.id
            received.setdefault(event["type"].rsplit(".", 1)[1], []).append(event["data"]["name"])
        assert len(received.get("ready", [])) + len(received.get("skipped", [])) == 5, received
        return received

    received = eventually(arrived, within=30)
    assert sorted(received["created"]) == ["270p.mp4", "360p.mp4", "480p.mp4", "audio.m4a", "highest.mp4"]
    assert sorted(received["ready"]) == ["360p.mp4", "audio.m4a", "highest.mp4"]
    assert sorted(received["skipped"]) == ["270p.mp4", "480p.mp4"]

    # delete: the entry, the file and its URL go (highest.mp4's bytes stay: thumbnails are cut from them)
    media = Path(api.settings.storage_url) / "assets" / asset.id / "media"
    for file in (made, highest):
        assets.delete_asset_static_rendition(asset.id, file.id)
        eventually(lambda name=file.name: _gone(api, playback.id, name))
    assert not (media / "360p.mp4").exists() and (media / "highest.mp4").exists()
    left = {file.name for file in assets.get_asset(asset.id).data.static_renditions.files}
    assert left == {"audio.m4a", "480p.mp4", "270p.mp4"}
    with pytest.raises(mux.ApiException) as missing:
        assets.delete_asset_static_rendition(asset.id, made.id)
    assert missing.value.status == 404
    eventually(lambda: _deleted(hooks, asset.id, {"360p.mp4", "highest.mp4"}), within=30)


def _gone(api: Any, playback_id: str, name: str) -> None:
    assert requests.get(f"{api.edge_url}/{playback_id}/{name}", timeout=10).status_code == 404


def _deleted(hooks: Hooks, asset_id: str, names: set[str]) -> None:
    assert {e["data"]["name"] for e in hooks.of(asset_id, "video.asset.static_rendition.deleted")} == names


@pytest.mark.slow
def test_legacy_mp4_support_maps_onto_static_renditions(api, hooks, assets, clip, tmp_path) -> None:
    asset = _wait(assets, assets.create_asset(mux.CreateAssetRequest(
        inputs=[mux.InputSettings(url=clip.as_uri())], playback_policies=[mux.PlaybackPolicy.PUBLIC],
        mp4_support="capped-1080p")).data.id)
    assert asset.status == "ready" and asset.mp4_support == "capped-1080p"
    [playback] = asset.playback_ids
    [capped] = asset.static_renditions.files
    assert (capped.name, capped.status) == ("capped-1080p.mp4", "ready")
    _check_file(api, playback.id, capped, duration=asset.duration, video=(640, 360), tmp=tmp_path)

    updated = assets.update_asset_mp4_support(asset.id, mux.UpdateAssetMP4SupportRequest(
        mp4_support="audio-only,capped-1080p")).data
    assert updated.mp4_support == "audio-only,capped-1080p"
    asset = _wait(assets, asset.id)
    files = {file.name: file for file in asset.static_renditions.files}
    assert set(files) == {"capped-1080p.mp4", "audio.m4a"} and files["audio.m4a"].status == "ready"
    _check_file(api, playback.id, files["audio.m4a"], duration=asset.duration, video=None, tmp=tmp_path)

    # standard (deprecated): high/medium/low from kinoray's rungs (360p, 240p; nothing is left for low)
    assets.update_asset_mp4_support(asset.id, mux.UpdateAssetMP4SupportRequest(mp4_support="standard"))
    asset = _wait(assets, asset.id)
    files = {file.name: file for file in asset.static_renditions.files}
    assert set(files) == {"high.mp4", "medium.mp4", "low.mp4"}
    assert [files[name].status for name in ("high.mp4", "medium.mp4", "low.mp4")] == ["ready", "ready", "skipped"]
    _check_file(api, playback.id, files["medium.mp4"], duration=asset.duration, video=(426, 240), tmp=tmp_path)
    eventually(lambda: _gone(api, playback.id, "capped-1080p.mp4"))

    cleared = assets.update_asset_mp4_support(asset.id, mux.UpdateAssetMP4SupportRequest(mp4_support="none")).data
    assert cleared.mp4_support == "none" and not cleared.static_renditions
    for name in ("high.mp4", "medium.mp4"):
        eventually(lambda name=name: _gone(api, playback.id, name))
    media = Path(api.settings.storage_url) / "assets" / asset.id / "media"
    assert not any((media / name).exists() for name in ("high.mp4", "medium.mp4", "audio.m4a", "capped-1080p.mp4"))


@pytest.mark.slow
def test_master_access_downloads_the_input_until_it_expires(api, hooks, assets, clip) -> None:
    created = assets.create_asset(mux.CreateAssetRequest(
        inputs=[mux.InputSettings(url=clip.as_uri())], master_access="temporary")).data
    assert created.master_access == "temporary" and created.master.status == "preparing"
    asset = _wait(assets, created.id)
    assert asset.status == "ready" and asset.master.status == "ready" and asset.master.url
    source = clip.read_bytes()
    url = asset.master.url
    assert url.startswith(f"{api.edge_url}/master/")
    whole = requests.get(url, timeout=30)
    assert whole.status_code == 200 and whole.content == source
    assert whole.headers["Cache-Control"] == "private, no-store"
    ranged = requests.get(url, headers={"Range": "bytes=-4096"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == source[-4096:]
    for forged in (url[:-1] + ("A" if url[-1] != "A" else "B"), f"{api.edge_url}/master/{'x' * 43}"):
        assert requests.get(forged, timeout=10).status_code == 404

    # none removes it at once; temporary again gives a new URL, ready at once on a ready asset
    removed = assets.update_asset_master_access(asset.id, mux.UpdateAssetMasterAccessRequest(
        master_access="none")).data
    assert removed.master_access == "none" and removed.master is None
    assert requests.get(url, timeout=10).status_code == 404
    again = assets.update_asset_master_access(asset.id, mux.UpdateAssetMasterAccessRequest(
        master_access="temporary")).data
    assert again.master.status == "ready" and again.master.url != url
    opened = time.monotonic()
    assert requests.get(again.master.url, headers={"Range": "bytes=0-99"}, timeout=10).content == source[:100]

    # expiry: refused from then on, and the runner's sweep sets the asset back to none with the webhook
    time.sleep(max(0.0, MASTER_SECONDS + 0.5 - (time.monotonic() - opened)))
    assert requests.get(again.master.url, timeout=10).status_code == 404
    assert assets.get_asset(asset.id).data.master_access == "none"

    def kinds() -> list[str]:
        seen = [event["type"].rsplit(".", 1)[1] for event in hooks.of(asset.id, "video.asset.master.")]
        assert seen.count("deleted") == 2, seen
        return seen

    # (webhooks are not delivered in order: Mux does not promise it either)
    assert sorted(eventually(kinds, within=30)) == ["deleted", "deleted", "preparing", "preparing", "ready", "ready"]


@pytest.mark.slow
def test_an_errored_asset_errors_its_downloads(api, hooks, assets, tmp_path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video at all" * 64)
    asset = _wait(assets, assets.create_asset(mux.CreateAssetRequest(
        inputs=[mux.InputSettings(url=broken.as_uri())], master_access="temporary",
        static_renditions=[mux.CreateStaticRenditionRequest(resolution="highest")])).data.id)
    assert asset.status == "errored"
    assert asset.static_renditions.status == "errored"
    assert [file.status for file in asset.static_renditions.files] == ["errored"]
    assert asset.master.status == "errored" and asset.master.url is None
    with pytest.raises(mux.ApiException) as refused:
        assets.create_asset_static_rendition(asset.id, mux.CreateStaticRenditionRequest(resolution="highest"))
    assert refused.value.status == 409
    eventually(lambda: _errored_events(hooks, asset.id), within=30)


def _errored_events(hooks: Hooks, asset_id: str) -> None:
    assert [e["data"]["name"] for e in hooks.of(asset_id, "video.asset.static_rendition.errored")] == ["highest.mp4"]
    assert len(hooks.of(asset_id, "video.asset.master.errored")) == 1


# --- the lease model, without Ray or HTTP --------------------------------------------------------------------


def test_a_claim_whose_runner_died_is_taken_again_then_errored(tmp_path) -> None:
    from kinoray.control.static_renditions import Produced, StaticRenditionWork
    from kinoray.settings import Settings
    from kinoray.store import Database
    from kinoray.store.models import Asset, AssetStatus, StaticRendition, StaticRenditionStatus

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'k.db'}",
                        jobs={"lease_seconds": 10, "max_attempts": 2})
    db = Database(settings.database_url)
    db.migrate()
    now = [1000.0]
    first = StaticRenditionWork(db, settings, owner="a", clock=lambda: now[0])
    second = StaticRenditionWork(db, settings, owner="b", clock=lambda: now[0])
    with db.session() as session:
        session.add(Asset(id="waiting", status=AssetStatus.PREPARING, storage_prefix="assets/waiting"))
        session.add(Asset(id="ready", status=AssetStatus.READY, storage_prefix="assets/ready"))
        session.flush()
        session.add(StaticRendition(id="early", asset_id="waiting", name="highest.mp4", resolution="highest"))
        session.add(StaticRendition(id="r1", asset_id="ready", name="highest.mp4", resolution="highest"))
    [task] = first.claim(5)  # the preparing asset's rendition waits for its asset
    assert (task.id, task.attempt, task.media_prefix) == ("r1", 1, "assets/ready/media")
    assert second.claim(5) == []  # held under a live lease
    now[0] += 11  # a's lease ran out: its runner is presumed dead
    [again] = second.claim(5)
    assert again.attempt == 2
    assert first.heartbeat({"r1"}) == set()  # a learns the rendition is no longer its own
    assert not first.finish("r1", Produced(StaticRenditionStatus.READY))
    now[0] += 11
    assert second.claim(5) == []  # a third claim would pass max_attempts: errored instead
    with db.reader() as session:
        row = session.get_one(StaticRendition, "r1")
        assert row.status == StaticRenditionStatus.ERRORED and "interrupted" in (row.reason or "")
    db.dispose()


def test_renditions_are_made_from_an_s3_store(s3_bucket, clip, tmp_path) -> None:
    """:func:`produce` over a remote store: the rung and the audio are downloaded, remuxed and put back; the
    pipeline's own ``highest.mp4`` is found, not remade."""
    from kinoray.control.static_renditions import RenditionTask, produce
    from kinoray.media.pipeline import TranscodeOptions, transcode_file
    from kinoray.store.models import StaticRenditionStatus
    from kinoray.store.objects import ObjectStore

    media = tmp_path / "media"
    transcode_file(str(clip), media, TranscodeOptions(chunk_seconds=4, segment_seconds=2))
    store = ObjectStore(f"s3://{s3_bucket}/root")
    for path in media.rglob("*"):
        if path.is_file():
            store.put_file(path, f"assets/a/media/{path.relative_to(media).as_posix()}")

    def task(name: str, resolution: str) -> RenditionTask:
        return RenditionTask(id=name, asset_id="a", name=name, resolution=resolution, legacy=False,
                             media_prefix="assets/a/media", attempt=1)

    made = produce(store, task("360p.mp4", "360p"))
    assert made.status == StaticRenditionStatus.READY and (made.width, made.height) == (640, 360)
    audio = produce(store, task("audio.m4a", "audio-only"))
    assert audio.status == StaticRenditionStatus.READY and audio.width is None
    highest = produce(store, task("highest.mp4", "highest"))
    assert highest.filesize == (media / "highest.mp4").stat().st_size
    skipped = produce(store, task("480p.mp4", "480p"))
    assert skipped.status == StaticRenditionStatus.SKIPPED and "above" in (skipped.reason or "")
    for name, facts in (("360p.mp4", made), ("audio.m4a", audio)):
        local = tmp_path / name
        store.get_file(f"assets/a/media/{name}", local)
        assert local.stat().st_size == facts.filesize
        probe = _ffprobe(local)
        assert abs(float(probe["format"]["duration"]) - 4.0) < 0.1
        boxes = _boxes(local.read_bytes())
        assert boxes.index("moov") < boxes.index("mdat")


@pytest.mark.slow
def test_an_audio_only_asset_gets_audio_m4a_only(api, assets, media_dir, tmp_path) -> None:
    from tests.media import make_media
    from tests.test_playback import AUDIO_ONLY

    source = make_media(AUDIO_ONLY, media_dir)
    asset = _wait(assets, assets.create_asset(mux.CreateAssetRequest(
        inputs=[mux.InputSettings(url=source.as_uri())], playback_policies=[mux.PlaybackPolicy.PUBLIC],
        mp4_support="audio-only,capped-1080p",
        static_renditions=[mux.CreateStaticRenditionRequest(resolution="highest"),
                           mux.CreateStaticRenditionRequest(resolution="audio-only")])).data.id)
    assert asset.status == "ready" and asset.resolution_tier == "audio-only"
    files = {file.name: file for file in asset.static_renditions.files}
    # highest has no video to use; mp4_support's audio.m4a is the one static_renditions asked for already
    assert {name: file.status for name, file in files.items()} == {"highest.mp4": "skipped", "audio.m4a": "ready"}
    [playback] = asset.playback_ids
    _check_file(api, playback.id, files["audio.m4a"], duration=asset.duration, video=None, tmp=tmp_path)
