"""Mux's own Node SDK (npm ``@mux/mux-node``, unmodified, only ``baseURL`` changed) as the test client.

``tests/js/mux_node_client.mjs`` calls every VOD operation kinoray offers as a user's code would — webhooks,
assets (create, retrieve, auto-paged list, update, input info, delete), playback ids, signing keys, ``mux.jwt``
tokens, direct uploads, ``webhooks.unwrap`` on what it received — and reports each operation and what it saw.
The SDK's own errors (``NotFoundError``, ``ConflictError``) and signature check are the oracles for what they
cover; what the SDK cannot see is checked here independently: the signed stream plays in Debian's ``ffprobe``
with the SDK's tokens (``kid`` in the claims, as ``mux.jwt`` writes them), the signed thumbnail has the width its
claims ask for, and the removed playback id no longer plays.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from kinoray.media.synthetic import generate_clip
from tests.api_server import eventually
from tests.compat import API_DOC, END, START, record
from tests.js_clients import run_node

pytestmark = pytest.mark.slow

WEBHOOKS = ["video.asset.created", "video.asset.deleted", "video.asset.master.ready", "video.asset.ready",
            "video.asset.static_rendition.created", "video.asset.static_rendition.deleted",
            "video.asset.static_rendition.ready", "video.upload.cancelled", "video.upload.created"]


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The API with ``file://`` inputs, webhooks to this machine and the job runner, so assets become ready."""
    from tests.api_server import api_with_runner

    with api_with_runner(api_backend.new_url(), tmp_path_factory.mktemp("mux-node"),
                         api={"allow_file_inputs": True, "allow_private_inputs": True}) as server:
        yield server


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("mux-node-clips")
    return [generate_clip(folder / f"clip{index}.mp4", width=480, height=270, fps=24, seconds=3) for index in range(2)]


@pytest.fixture(scope="module")
def run(api, clips: list[Path]) -> dict[str, Any]:
    token_id, token_secret = api.auth
    result = run_node("mux_node_client.mjs", {
        "api": api.url, "tokenId": token_id, "tokenSecret": token_secret,
        "inputs": [clip.as_uri() for clip in clips], "readySeconds": 240, "webhookSeconds": 60,
        "expectWebhooks": WEBHOOKS,
    }, timeout=600)
    for operation in result["operations"]:
        record("@mux/mux-node 15.3.0", operation["name"], operation["ok"], operation.get("error", ""))
    return result


def _ffprobe(url: str) -> dict[str, Any]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height:format=duration",
                           "-of", "json", url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_every_operation_succeeds(run: dict[str, Any]) -> None:
    failed = [operation for operation in run["operations"] if not operation["ok"]]
    assert failed == [], json.dumps(failed, indent=1)
    names = {operation["name"] for operation in run["operations"]}
    assert len(names) >= 30  # nothing was skipped on the way (a missing asset or key skips what depends on it)


def test_answers_as_the_sdk_reads_them(run: dict[str, Any]) -> None:
    facts = run["facts"]
    assert facts["createdStatus"] == ["preparing", "preparing"] and facts["readyStatus"] == ["ready", "ready"]
    assert facts["assetId"] in facts["assetsListed"] and facts["firstPageSize"] == 1
    assert facts["trackTypes"] == ["audio", "video"] and facts["inputInfoTrackTypes"] == ["audio", "video"]
    assert 2.5 < facts["duration"] < 3.5 and facts["maxResolutionTier"] == "1080p"
    assert facts["updatedPassthrough"] == "renamed" and facts["retrievedPlaybackPolicy"] == "public"
    assert facts["playbackIdObject"] == {"type": "asset", "id": facts["assetId"]}
    assert facts["signingKeyListed"] and facts["uploadListed"] and facts["uploadStatusAfterCancel"] == "cancelled"
    assert facts["multiTokens"] == ["playback-token", "thumbnail-token"]
    # webhooks: shown once, listed, Mux's envelope (attempts), every one verified by the SDK's unwrap
    assert facts["webhookSecretShownOnCreate"] and facts["webhookSecretHiddenOnRead"] and facts["webhookListed"]
    assert facts["webhookAddress"].endswith("/mux-webhooks") and facts["webhookEnabledAfterUpdate"] is False
    assert set(WEBHOOKS) <= set(facts["webhookTypes"]) and all(facts["webhookAttempts"])
    assert facts["staticRenditionCreated"] == {"status": "preparing", "name": "audio.m4a"}
    assert facts["staticRenditionReady"] == {"status": "ready", "name": "audio.m4a", "ext": "m4a"}
    assert facts["mp4SupportAfterUpdate"] == "capped-1080p" and facts["masterAccessAfterUpdate"] == "temporary"
    assert facts["masterStatus"] == "ready"


def test_master_download_is_the_uploaded_file(run: dict[str, Any], clips: list[Path]) -> None:
    master = requests.get(run["facts"]["masterUrl"], timeout=60)
    assert master.status_code == 200 and master.content == clips[0].read_bytes()


def test_sdk_tokens_play_the_signed_stream(api, run: dict[str, Any]) -> None:
    facts = run["facts"]
    signed = facts["signedPlaybackId"]
    for token in (facts["videoToken"], facts["multiPlaybackToken"]):
        probe = _ffprobe(f"{api.edge_url}/{signed}.m3u8?token={token}")
        kinds = sorted(stream["codec_type"] for stream in probe["streams"])
        assert "video" in kinds and "audio" in kinds
        assert abs(float(probe["format"]["duration"]) - facts["duration"]) < 0.5
    assert requests.get(f"{api.edge_url}/{signed}.m3u8", timeout=30).status_code == 403  # no token, no stream

    # the thumbnail's options come from its token's claims (width 96), as Mux reads them for signed ids
    thumbnail = requests.get(f"{api.edge_url}/{signed}/thumbnail.jpg", params={"token": facts["thumbnailToken"]},
                             timeout=60)
    assert thumbnail.status_code == 200, thumbnail.text
    path = Path(api.settings.data_dir) / "node-thumbnail.jpg"
    path.write_bytes(thumbnail.content)
    [image] = _ffprobe(str(path))["streams"]
    assert (image["width"], image["height"]) == (96, 54)
    storyboard = requests.get(f"{api.edge_url}/{signed}/storyboard.vtt",
                              params={"token": facts["storyboardToken"]}, timeout=60)
    assert storyboard.status_code == 200 and storyboard.text.startswith("WEBVTT")


def test_removed_playback_id_stops_playing(api, run: dict[str, Any]) -> None:
    facts = run["facts"]
    assert requests.get(f"{api.edge_url}/{facts['publicPlaybackId']}.m3u8", timeout=30).status_code == 200

    def gone() -> None:
        assert requests.get(f"{api.edge_url}/{facts['deletedPlaybackId']}.m3u8", timeout=30).status_code == 404

    eventually(gone)


def test_the_compatibility_table_lists_every_operation() -> None:
    """docs/API.md's table (``make compat-table``) names every operation the Node client makes."""
    script = (Path(__file__).parent / "js" / "mux_node_client.mjs").read_text()
    operations = set(re.findall(r"op\('([^']+)'", script))
    table = API_DOC.read_text().split(START, 1)[1].split(END, 1)[0]
    listed = {match for match in re.findall(r"^\| `([^`]+)` \| @mux/mux-node", table, re.MULTILINE)}
    assert operations and operations <= listed, sorted(operations - listed)
