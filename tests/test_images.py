"""Images over real HTTP: thumbnails (exact frames, sizes, formats), animated GIF/WebP, storyboards (sprite +
WebVTT), the storage cache (ETag/304, single flight) and the typed errors. Oracles are independent of the code
under test: the Debian ffmpeg/ffprobe decode both the source rendition and what was served, and animated WebP
(which Debian's ffmpeg 5.1 cannot decode) is read chunk by chunk from its RIFF container."""

from __future__ import annotations

import base64
import functools
import math
import re
import shutil
import struct
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path
from urllib.parse import urljoin

import jwt
import numpy as np
import pytest
import requests

from tests.oracles import FFMPEG, ffprobe_json

FPS = 30
WIDTH, HEIGHT = 640, 360
SECONDS = 6


@pytest.fixture(scope="module")
def transcoded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A 6 s 640x360 testsrc2 clip transcoded once in-process: the media folder and the asset's columns."""
    from kinoray.media.pipeline import TranscodeOptions, transcode_file
    from kinoray.media.synthetic import generate_clip
    from kinoray.serve.runner import asset_fields

    work = tmp_path_factory.mktemp("images-media")
    source = generate_clip(work / "source.mp4", width=WIDTH, height=HEIGHT, fps=FPS, seconds=SECONDS)
    result = transcode_file(str(source), work / "media", TranscodeOptions(ladder=(360, 240), chunk_seconds=4))
    return work / "media", asset_fields(result)


class Images:
    """A running API with assets in every state the image routes care about."""

    def __init__(self, server, media: Path, fields: dict) -> None:
        from kinoray.control.signing import create_signing_key
        from kinoray.store.models import Asset, AssetStatus, PlaybackId, PlaybackPolicy

        self.server, self.url = server, server.edge_url
        storage = Path(server.settings.storage_url)
        with server.platform.db.session() as session:
            ready = Asset(status=AssetStatus.READY, progress_state="completed", progress_fraction=1.0, **fields)
            preparing = Asset()
            errored = Asset(status=AssetStatus.ERRORED, errors={"type": "invalid_media", "messages": ["bad"]})
            audio_only = Asset(status=AssetStatus.READY, duration=6.0, resolution_tier="audio-only",
                               tracks=[{"type": "audio", "id": "a", "max_channels": 2, "duration": 6.0}])
            session.add_all([ready, preparing, errored, audio_only])
            session.flush()
            for asset in (ready, preparing, errored, audio_only):
                asset.storage_prefix = f"assets/{asset.id}"
            public = PlaybackId(asset_id=ready.id, policy=PlaybackPolicy.PUBLIC)
            signed = PlaybackId(asset_id=ready.id, policy=PlaybackPolicy.SIGNED)
            waiting = PlaybackId(asset_id=preparing.id)
            failed = PlaybackId(asset_id=errored.id)
            sound = PlaybackId(asset_id=audio_only.id)
            session.add_all([public, signed, waiting, failed, sound])
            session.flush()
            self.asset_id = ready.id
            self.public, self.signed, self.preparing, self.audio_only = public.id, signed.id, waiting.id, sound.id
            self.errored = failed.id
            key, private_key = create_signing_key(session)
            self.key_id, self.private_pem = key.id, base64.b64decode(private_key)
        shutil.copytree(media, storage / "assets" / self.asset_id / "media")
        self.highest = media / "highest.mp4"  # the same bytes the server reads; shared by both backends' runs
        self.images_dir = storage / "assets" / self.asset_id / "images"

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(f"{self.url}/{self.public}/{path}", params=params, timeout=60)

    def token(self, audience: str, *, playback_id: str | None = None, seconds: int = 600, **options: object) -> str:
        claims = {"sub": playback_id or self.signed, "aud": audience, "exp": int(time.time()) + seconds, **options}
        return jwt.encode(claims, self.private_pem, algorithm="RS256", headers={"kid": self.key_id})


@pytest.fixture(scope="module")
def images(api_backend, transcoded, tmp_path_factory: pytest.TempPathFactory):
    from tests.api_server import ApiServer

    server = ApiServer(api_backend.new_url(), tmp_path_factory.mktemp("images-api"))
    try:
        yield Images(server, *transcoded)
    finally:
        server.close()


# --- oracles -------------------------------------------------------------------------------------------------


def _as_file(data_or_path: bytes | Path) -> Path:
    """Served bytes go through a file: ffprobe cannot count a GIF's frames from a pipe."""
    if isinstance(data_or_path, Path):
        return data_or_path
    import tempfile

    handle = tempfile.NamedTemporaryFile(prefix="kinoray-image-", delete=False)
    with handle:
        handle.write(data_or_path)
    return Path(handle.name)


def _probe(data_or_path: bytes | Path, *args: str) -> dict:
    path = _as_file(data_or_path)
    try:
        return ffprobe_json(path, "-show_streams", "-select_streams", "v:0", *args)["streams"][0]
    finally:
        if path is not data_or_path:
            path.unlink()


def probe_size(data_or_path: bytes | Path) -> tuple[int, int]:
    stream = _probe(data_or_path)
    return int(stream["width"]), int(stream["height"])


def probe_image(data: bytes) -> dict:
    """ffprobe's view of served bytes: codec, size, decoded frame count (``nb_read_frames``)."""
    return _probe(data, "-count_frames")


def decode_rgb(data_or_path: bytes | Path, *, frame: int | None = None) -> np.ndarray:
    """Frame ``frame`` (default the first) of an image or video, decoded to rgb24 by the Debian ffmpeg."""
    width, height = probe_size(data_or_path)
    path = _as_file(data_or_path)
    selection = ["-vf", f"select=eq(n\\,{frame})"] if frame is not None else []
    try:
        proc = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), *selection, "-frames:v", "1",
                               "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True,
                              timeout=60)
    finally:
        if path is not data_or_path:
            path.unlink()
    return np.frombuffer(proc.stdout, np.uint8).reshape(height, width, 3)


@functools.lru_cache(maxsize=64)
def source_frame(path: Path, index: int) -> np.ndarray:
    return decode_rgb(path, frame=index)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if error == 0 else 10 * math.log10(255**2 / error)


def webp_chunks(data: bytes) -> tuple[tuple[int, int], int, int]:
    """An animated WebP's canvas size, ANMF (frame) count and loop count, read from its RIFF chunks."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    assert struct.unpack("<I", data[4:8])[0] + 8 == len(data)
    canvas, frames, loops, offset = (0, 0), 0, -1, 12
    while offset < len(data):
        tag, size = data[offset:offset + 4], struct.unpack("<I", data[offset + 4:offset + 8])[0]
        body = data[offset + 8:offset + 8 + size]
        if tag == b"VP8X":
            canvas = (1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little"))
        elif tag == b"ANIM":
            loops = struct.unpack("<H", body[4:6])[0]
        elif tag == b"ANMF":
            frames += 1
        offset += 8 + size + (size & 1)
    return canvas, frames, loops


_CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) --> (\d\d):(\d\d):(\d\d)\.(\d\d\d)$")


def parse_vtt(text: str) -> list[tuple[Fraction, Fraction, str]]:
    """(start, end, payload) of every cue of a WebVTT document; fails on anything it does not understand."""
    blocks = text.replace("\r\n", "\n").strip("\n").split("\n\n")
    assert blocks[0].splitlines()[0] == "WEBVTT", blocks[0]
    cues = []
    for block in blocks[1:]:
        lines = block.splitlines()
        match = _CUE.match(lines[0])
        assert match is not None and len(lines) == 2, block
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(part) for part in match.groups())
        start = Fraction(((h1 * 60 + m1) * 60 + s1) * 1000 + ms1, 1000)
        end = Fraction(((h2 * 60 + m2) * 60 + s2) * 1000 + ms2, 1000)
        cues.append((start, end, lines[1]))
    return cues


# --- thumbnails ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("time", ["2.5", "2.51", "4.99", "0.04", "5.99"])
def test_thumbnail_is_the_exact_frame_at_time(images, time: str) -> None:
    answer = images.get("thumbnail.png", time=time)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    served = decode_rgb(answer.content)
    assert served.shape == (HEIGHT, WIDTH, 3)
    index = math.floor(Fraction(time) * FPS)  # the frame whose interval [n/30, (n+1)/30) holds the time
    exact = psnr(served, source_frame(images.highest, index))
    neighbours = [psnr(served, source_frame(images.highest, other))
                  for other in (index - 1, index + 1) if 0 <= other < SECONDS * FPS]
    assert exact >= 30, (time, exact)
    assert all(value < exact - 10 for value in neighbours), (time, exact, neighbours)


def test_default_time_is_the_middle(images) -> None:
    default = images.get("thumbnail.jpg")
    middle = images.get("thumbnail.jpg", time=SECONDS / 2)
    assert default.status_code == middle.status_code == 200
    assert default.content == middle.content
    assert middle.headers["x-image-cache"] == "hit"  # the same canonical parameters: one stored image


def test_time_past_the_end_is_the_last_frame(images) -> None:
    served = decode_rgb(images.get("thumbnail.png", time=60).content)
    assert psnr(served, source_frame(images.highest, SECONDS * FPS - 1)) >= 30


@pytest.mark.parametrize(("params", "size"), [
    ({"width": 320}, (320, 180)),
    ({"height": 90}, (160, 90)),
    ({"width": 200, "height": 200}, (200, 112)),  # preserve: fits inside the box
    ({"width": 200, "height": 200, "fit_mode": "stretch"}, (200, 200)),
    ({"width": 200, "height": 200, "fit_mode": "crop"}, (200, 200)),
    ({"width": 200, "height": 200, "fit_mode": "pad"}, (200, 200)),
    ({"width": 1920}, (1920, 1080)),
])
def test_thumbnail_sizes(images, params: dict, size: tuple[int, int]) -> None:
    answer = images.get("thumbnail.jpg", time=1, **params)
    assert answer.status_code == 200, answer.text
    assert probe_size(answer.content) == size


def test_pad_letterboxes_and_crop_fills(images) -> None:
    padded = decode_rgb(images.get("thumbnail.png", time=1, width=200, height=200, fit_mode="pad").content)
    cropped = decode_rgb(images.get("thumbnail.png", time=1, width=200, height=200, fit_mode="crop").content)
    # 640x360 fit into 200x200 is 200x112 (or 113): 44 black rows above and below
    assert padded[:40].max() == 0 and padded[-40:].max() == 0
    assert padded[50:150].mean() > 20
    for rows in (cropped[:10], cropped[-10:]):
        assert rows.mean() > 20  # picture to the edges
    # crop keeps the middle 200x200 of the 356x200 scaled frame: compare with ffmpeg's own scale + crop
    reference = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(images.highest), "-vf", "select=eq(n\\,30),scale=356:200,crop=200:200",
         "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    assert psnr(cropped, np.frombuffer(reference, np.uint8).reshape(200, 200, 3)) > 20


@pytest.mark.parametrize(("extension", "codec"), [("jpg", "mjpeg"), ("png", "png"), ("webp", "webp")])
def test_thumbnail_formats(images, extension: str, codec: str) -> None:
    answer = images.get(f"thumbnail.{extension}", time=2.5, width=320)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == {"jpg": "image/jpeg"}.get(extension, f"image/{extension}")
    stream = probe_image(answer.content)
    assert (stream["codec_name"], stream["width"], stream["height"]) == (codec, 320, 180)
    reference = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(images.highest), "-vf", "select=eq(n\\,75),scale=320:180",
         "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    assert psnr(decode_rgb(answer.content), np.frombuffer(reference, np.uint8).reshape(180, 320, 3)) > 25


# --- animated ------------------------------------------------------------------------------------------------


def test_animated_gif(images) -> None:
    answer = images.get("animated.gif", start=1, end=3, fps=10, width=200)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/gif"
    stream = probe_image(answer.content)
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("gif", 200, 112)
    assert int(stream["nb_read_frames"]) == 20


def test_animated_defaults_are_5_seconds_320_wide_at_15_fps(images) -> None:
    stream = probe_image(images.get("animated.gif").content)
    assert (stream["width"], stream["height"], int(stream["nb_read_frames"])) == (320, 180, 75)


def test_animated_webp(images) -> None:
    answer = images.get("animated.webp", start=0.5, end=2.5, fps=12, height=120)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/webp"
    canvas, frames, loops = webp_chunks(answer.content)
    assert canvas == (213, 120) and frames == 24 and loops == 0


def test_animated_is_cut_at_the_end_of_the_video(images) -> None:
    stream = probe_image(images.get("animated.gif", start=5, end=8, fps=10).content)
    assert int(stream["nb_read_frames"]) == 10


@pytest.mark.parametrize("params", [
    {"start": 0, "end": 12},  # longer than 10 s
    {"start": 1, "end": 1.1},  # shorter than 0.25 s
    {"start": 2, "end": 1},
    {"width": 641},
    {"height": 800},
    {"fps": 31},
    {"fps": 0},
    {"start": 6},  # nothing left
    {"start": -1},
    {"start": "nan"},
    {"width": "wide"},
])
def test_animated_bounds(images, params: dict) -> None:
    answer = images.get("animated.gif", **params)
    assert answer.status_code == 400, (params, answer.text)
    assert answer.json()["error"]["type"] == "invalid_parameters"


# --- storyboards ---------------------------------------------------------------------------------------------


def test_storyboard_sprite_and_vtt(images) -> None:
    sprite = images.get("storyboard.jpg")
    assert sprite.status_code == 200 and sprite.headers["content-type"] == "image/jpeg"
    width, height = probe_size(sprite.content)
    vtt = images.get("storyboard.vtt")
    assert vtt.status_code == 200 and vtt.headers["content-type"].startswith("text/vtt")
    cues = parse_vtt(vtt.text)
    assert cues[0][0] == 0 and cues[-1][1] >= SECONDS and cues[-1][1] - SECONDS < Fraction(1, 1000)
    assert all(earlier[1] == later[0] for earlier, later in zip(cues, cues[1:], strict=False))
    tiles = set()
    for _, _, payload in cues:
        match = re.fullmatch(r"storyboard\.jpg#xywh=(\d+),(\d+),(\d+),(\d+)", payload)
        assert match is not None, payload
        x, y, w, h = (int(part) for part in match.groups())
        assert x + w <= width and y + h <= height and w > 0 and h > 0
        tiles.add((x, y, w, h))
    assert len(tiles) == len(cues)  # one tile per cue
    tile_w, tile_h = next(iter(tiles))[2:]
    columns, rows = len({x for x, *_ in tiles}), len({y for _, y, *_ in tiles})
    assert (width, height) == (columns * tile_w, rows * tile_h)  # the sprite is the grid of tiles
    # each tile is the frame at its cue's start, scaled: tile 1 (1.0 s) is frame 30
    png = decode_rgb(images.get("storyboard.png").content)
    x, y, w, h = sorted(tiles, key=lambda tile: (tile[1], tile[0]))[1]
    reference = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(images.highest), "-vf", f"select=eq(n\\,30),scale={w}:{h}",
         "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    tile = png[y:y + h, x:x + w]
    assert psnr(tile, np.frombuffer(reference, np.uint8).reshape(h, w, 3)) > 25


def test_storyboard_vtt_refers_to_the_sprite_format_asked_for(images) -> None:
    payloads = [payload for _, _, payload in parse_vtt(images.get("storyboard.vtt", format="webp").text)]
    assert payloads and all(payload.startswith("storyboard.webp#xywh=") for payload in payloads)
    # a token on a public id is not needed, so it is not propagated either
    payloads = [payload for _, _, payload in parse_vtt(images.get("storyboard.vtt", token="x").text)]
    assert all(payload.startswith("storyboard.jpg#xywh=") for payload in payloads)


# --- caching -------------------------------------------------------------------------------------------------


def test_second_request_is_served_from_storage(images) -> None:
    from kinoray.control.images import RENDERS

    before = RENDERS["thumbnail"]
    first = images.get("thumbnail.webp", time=1.25, width=300)
    assert first.headers["x-image-cache"] == "miss"
    stored = sorted(images.images_dir.glob("*.webp"))
    assert stored and all(".tmp-" not in path.name for path in stored)
    mtimes = {path: path.stat().st_mtime_ns for path in stored}
    second = images.get("thumbnail.webp", time=1.25, width=300)
    assert second.headers["x-image-cache"] == "hit"
    assert second.content == first.content
    assert RENDERS["thumbnail"] == before + 1
    assert {path: path.stat().st_mtime_ns for path in stored} == mtimes


def test_etag_304_head_and_headers(images) -> None:
    answer = images.get("thumbnail.jpg", time=2)
    etag = answer.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert answer.headers["cache-control"].startswith("public, max-age=")
    assert answer.headers["access-control-allow-origin"] == "*"
    url = f"{images.url}/{images.public}/thumbnail.jpg?time=2"
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = requests.get(url, headers={"If-None-Match": header}, timeout=30)
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert requests.get(url, headers={"If-None-Match": '"other"'}, timeout=30).status_code == 200
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(answer.content) and head.headers["etag"] == etag
    vtt = images.get("storyboard.vtt")
    assert requests.get(vtt.url, headers={"If-None-Match": vtt.headers["etag"]}, timeout=30).status_code == 304


def test_concurrent_requests_render_once(images) -> None:
    from kinoray.control.images import RENDERS

    before = dict(RENDERS)
    barrier = threading.Barrier(8)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def fetch(path: str, params: dict) -> None:
        barrier.wait()
        answer = images.get(path, **params)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=fetch, args=("animated.gif", {"start": 2, "end": 4, "fps": 10}))
               for _ in range(4)]
    threads += [threading.Thread(target=fetch, args=("thumbnail.png", {"time": 4.2, "width": 111}))
                for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [answer.status_code for answer in answers] == [200] * 8
    assert RENDERS["animated"] == before.get("animated", 0) + 1
    assert RENDERS["thumbnail"] == before.get("thumbnail", 0) + 1
    assert sum(answer.headers["x-image-cache"] == "miss" for answer in answers) == 2
    for kind in ("image/gif", "image/png"):
        bodies = {answer.content for answer in answers if answer.headers["content-type"] == kind}
        assert len(bodies) == 1


# --- errors --------------------------------------------------------------------------------------------------


def _error(answer: requests.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["type"]


def test_unknown_and_malformed_ids_are_404(images) -> None:
    for path in ("Zz9Zz9Zz9Zz9/thumbnail.jpg", "..%2F..%2Fetc/thumbnail.jpg", "%2e%2e/thumbnail.jpg",
                 "a.b/animated.gif", f"{'x' * 65}/storyboard.vtt"):
        answer = requests.get(f"{images.url}/{path}", timeout=30)
        assert answer.status_code == 404, (path, answer.status_code, answer.text)
    assert _error(requests.get(f"{images.url}/Zz9Zz9Zz9Zz9/thumbnail.jpg", timeout=30)) == (404, "not_found")
    assert _error(images.get("thumbnail.gif")) == (404, "not_found")
    assert _error(images.get("storyboard.mp4")) == (404, "not_found")


def test_asset_states(images) -> None:
    status, kind = _error(requests.get(f"{images.url}/{images.preparing}/thumbnail.jpg", timeout=30))
    assert (status, kind) == (412, "asset_not_ready")
    assert _error(requests.get(f"{images.url}/{images.errored}/animated.gif", timeout=30)) == (404, "not_found")
    answer = requests.get(f"{images.url}/{images.audio_only}/storyboard.vtt", timeout=30)
    assert _error(answer) == (404, "not_found") and "audio-only" in answer.json()["error"]["messages"][0]


def test_signed_playback_ids(images) -> None:
    base = f"{images.url}/{images.signed}"
    for path, audience in (("thumbnail.jpg", "t"), ("animated.gif", "g"), ("storyboard.vtt", "s")):
        assert _error(requests.get(f"{base}/{path}", timeout=30)) == (403, "playback_forbidden")
        wrong = "v" if audience != "v" else "t"
        for token in (images.token(wrong), images.token(audience, seconds=-60),
                      images.token(audience, playback_id=images.public)):
            refused = requests.get(f"{base}/{path}", params={"token": token}, timeout=30)
            assert _error(refused) == (403, "playback_forbidden")
        answer = requests.get(f"{base}/{path}", params={"token": images.token(audience, seconds=300)}, timeout=60)
        assert answer.status_code == 200, (path, answer.text)
        cache_control = answer.headers["cache-control"]
        if path.endswith(".vtt"):
            assert cache_control == "private, no-store"  # it carries the viewer's token
        else:  # cacheable, but not past the token's expiry
            assert cache_control.startswith("public, max-age=") and 290 <= int(cache_control.split("=")[1]) <= 300


def test_signed_image_options_come_from_the_token_not_the_query(images) -> None:
    """As Mux: for a signed id the token's claims choose the image (``mux.jwt`` writes them as strings); the
    URL's query cannot ask for another one. Sizes read back with Debian's ffprobe."""
    base = f"{images.url}/{images.signed}"
    token = images.token("t", width="160", time="1.5")
    answer = requests.get(f"{base}/thumbnail.png", params={"token": token, "width": 400, "time": 0}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert probe_size(answer.content)[0] == 160
    unsized = requests.get(f"{base}/thumbnail.png", params={"token": images.token("t"), "width": 400}, timeout=60)
    assert unsized.status_code == 200 and probe_size(unsized.content)[0] != 400  # the query's width is ignored
    animated = requests.get(f"{base}/animated.gif", params={"token": images.token("g", width=96, fps=5)},
                            timeout=60)
    assert animated.status_code == 200 and probe_size(animated.content)[0] == 96
    bad = requests.get(f"{base}/thumbnail.png", params={"token": images.token("t", width="wide")}, timeout=30)
    assert _error(bad) == (400, "invalid_parameters")
    # a public id still takes its options from the query
    assert probe_size(images.get("thumbnail.png", width=200).content)[0] == 200


def test_signed_storyboard_vtt_carries_the_token_to_the_sprite(images) -> None:
    token = images.token("s")
    vtt_url = f"{images.url}/{images.signed}/storyboard.vtt?token={token}"
    cues = parse_vtt(requests.get(vtt_url, timeout=60).text)
    sprite_urls = {payload.split("#", 1)[0] for _, _, payload in cues}
    assert sprite_urls == {f"storyboard.jpg?token={token}"}
    sprite = requests.get(urljoin(vtt_url, sprite_urls.pop()), timeout=60)  # resolved as a player would
    assert sprite.status_code == 200 and sprite.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize("params", [
    {"width": 0}, {"width": 1921}, {"height": 5000}, {"fit_mode": "zoom"}, {"time": -1}, {"time": "abc"},
    {"time": "inf"}, {"width": "1.5"},
])
def test_bad_thumbnail_parameters(images, params: dict) -> None:
    assert _error(images.get("thumbnail.jpg", **params)) == (400, "invalid_parameters"), params


def test_bad_storyboard_parameters(images) -> None:
    assert _error(images.get("storyboard.vtt", format="gif")) == (400, "invalid_parameters")
    assert _error(images.get("storyboard.jpg", format="png")) == (400, "invalid_parameters")


# --- the media functions on their own ------------------------------------------------------------------------


@pytest.mark.parametrize(("resize", "size"), [
    ({}, (640, 360)),
    ({"width": 100}, (100, 56)),
    ({"height": 100}, (178, 100)),
    ({"width": 100, "height": 100}, (100, 56)),
    ({"width": 100, "height": 100, "fit_mode": "stretch"}, (100, 100)),
    ({"width": 100, "height": 100, "fit_mode": "crop"}, (100, 100)),
    ({"width": 100, "height": 100, "fit_mode": "pad"}, (100, 100)),
    ({"max_size": 320}, (320, 180)),
    ({"height": 400, "max_size": 640}, (640, 360)),  # the side that follows the aspect is bounded too
    ({"width": 1000, "height": 100, "max_size": 640}, (178, 100)),  # a full box is the caller's to bound
])
def test_resize_output_sizes(resize: dict, size: tuple[int, int]) -> None:
    from kinoray.media.images import Resize, Size

    assert Resize(**resize).output_size(Size(WIDTH, HEIGHT)) == Size(*size)


def test_resize_refuses_nonsense() -> None:
    from kinoray.media.images import Resize

    for bad in ({"width": 0}, {"height": -1}, {"fit_mode": "smartcrop"}, {"max_size": 0}):
        with pytest.raises(ValueError):
            Resize(**bad)


def test_frame_reader_is_exact_and_decodes_forward(transcoded) -> None:
    from kinoray.media.images import FrameReader

    media, _ = transcoded
    times = [Fraction(n, 100) for n in range(0, 600, 7)]  # every 70 ms: crosses frame boundaries unevenly
    with FrameReader(str(media / "highest.mp4")) as reader:
        picked = [frame.time for frame in reader.frames_at(times)]
        assert reader.seeks == 1 and reader.decoded <= SECONDS * FPS + 4  # one pass, no re-decoding
        assert reader.frame_at(Fraction(1, 2)).time == Fraction(15, 30)  # backwards: a new seek
        assert reader.seeks == 2
        assert reader.frame_at(Fraction(1000)).time == Fraction(SECONDS * FPS - 1, FPS)  # past the end: last
    assert picked == [Fraction(math.floor(time * FPS), FPS) for time in times]


@pytest.mark.parametrize("duration", [Fraction(6), Fraction(1, 3), Fraction(7201, 3), Fraction(100001, 1000)])
def test_storyboard_layout_and_vtt_cover_the_duration(duration: Fraction) -> None:
    from kinoray.media.images import Size, plan_storyboard, storyboard_vtt

    layout = plan_storyboard(duration, Size(1920, 1080))
    assert 1 <= layout.count <= 100 and layout.columns * layout.rows >= layout.count
    assert layout.tile == Size(256, 144) and layout.sprite == Size(layout.columns * 256, layout.rows * 144)
    cues = parse_vtt(storyboard_vtt(layout, "s.jpg"))
    assert len(cues) == layout.count
    assert cues[0][0] == 0 and duration <= cues[-1][1] < duration + Fraction(1, 1000)
    assert all(earlier[1] == later[0] and earlier[0] < earlier[1] for earlier, later in zip(cues, cues[1:],
                                                                                            strict=False))


def test_still_encoders_round_trip() -> None:
    from kinoray.media.images import encode_still

    gradient = np.zeros((31, 47, 3), np.uint8)  # odd sizes are fine for images
    gradient[..., 0] = np.linspace(0, 255, 47, dtype=np.uint8)
    gradient[..., 1] = np.linspace(0, 255, 31, dtype=np.uint8)[:, None]
    for format, floor in (("png", math.inf), ("jpg", 30), ("webp", 30)):
        decoded = decode_rgb(encode_still(gradient, format))
        assert decoded.shape == gradient.shape and psnr(decoded, gradient) >= floor, format


def test_segmented_reader_is_exact_across_segments(transcoded) -> None:
    from kinoray.media.images import SegmentedReader, dash_video_renditions

    media, _ = transcoded
    renditions = dash_video_renditions((media / "manifest.mpd").read_text())
    assert [(r.name, r.size.width, r.size.height) for r in renditions] == [("360p", 640, 360), ("240p", 426, 240)]
    smallest = renditions[-1]
    assert [segment.name for segment in smallest.segments] == ["240p/seg_00001.m4s", "240p/seg_00002.m4s"]
    assert [(segment.start, segment.duration) for segment in smallest.segments] == [(0, 360000), (360000, 180000)]
    times = [Fraction(n, 100) for n in range(0, 600, 13)] + [Fraction(4), Fraction(4) - Fraction(1, 10**6)]
    with SegmentedReader(smallest, lambda name: (media / name).read_bytes()) as reader:
        picked = [frame.time for frame in reader.frames_at(times)]
        assert reader.fetched == 3  # the first segment, the second (also for 4 s), the first again
        assert reader.size == smallest.size
    assert picked == [Fraction(math.floor(time * FPS), FPS) for time in times]


def test_images_on_s3_storage(s3_server, s3_bucket, transcoded) -> None:
    """The same rendering and caching over an S3 store (moto): ranged reads of highest.mp4, segments fetched by
    key, images committed with a temp key and a rename."""
    from kinoray.control.images import RENDERS, ImageCache, ImageSource, StoryboardParams, ThumbnailParams
    from kinoray.control.playback import Playback
    from kinoray.settings import StorageSettings
    from kinoray.store.models import PlaybackPolicy
    from kinoray.store.objects import ObjectStore

    media, _ = transcoded
    store = ObjectStore(f"s3://{s3_bucket}/root", StorageSettings(s3_endpoint_url=s3_server))
    assets = store.child("assets/a1/media")
    for path in media.rglob("*"):
        if path.is_file():
            assets.put_file(path, path.relative_to(media).as_posix())
    source = ImageSource(Playback("p1", "a1", PlaybackPolicy.PUBLIC, "assets/a1/media"), Fraction(SECONDS),
                         "assets/a1")
    cache = ImageCache(store)
    before = dict(RENDERS)
    thumb = cache.thumbnail(source, ThumbnailParams.parse(source, "png", time=2.5))
    assert thumb.rendered and psnr(decode_rgb(thumb.body), source_frame(media / "highest.mp4", 75)) == math.inf
    sprite = cache.storyboard(source, StoryboardParams.parse("jpg"))
    assert sprite.rendered and probe_size(sprite.body) == (768, 288)
    again = cache.thumbnail(source, ThumbnailParams.parse(source, "png", time=2.5))
    assert not again.rendered and again.body == thumb.body and again.etag == thumb.etag
    assert RENDERS["thumbnail"] == before.get("thumbnail", 0) + 1
    stored = store.list("assets/a1/images")
    assert len(stored) == 2 and not list(store.iter_temporary("assets/a1/images"))
