"""WHIP ingest and WHEP playback (``kinoray.live.whip``) end to end: Debian's Chromium publishes over WebRTC
through the delivery edge to the live runtime (the ingest on a free port, the transcoder actor on a local Ray),
and a second page plays the stream over WHEP.

Checked independently: ``ffmpeg`` decodes the live HLS that the published camera became, with no error; the
stream goes ``active`` and its recording becomes a ready asset after the publisher leaves; a wrong key is
refused ``401 stream_key_refused`` and a disabled stream's ``403`` before any media, each counted in the same
metric as RTMP's refusals; a WHEP viewer's Chromium decodes frames (``requestVideoFrameCallback``) whose
time code — drawn by the publishing page on a canvas from ``Date.now()`` — says how far behind the publisher it is.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import free_port
from tests.live_runtime import create_live_stream, get_live_stream, live_api, live_ingest
from tests.test_live_rtmp import refused

pytestmark = [pytest.mark.slow, pytest.mark.browser]

log = logging.getLogger(__name__)

#: Publishing through getUserMedia needs the permission prompt answered, a fake camera and microphone, and host
#: candidates with real addresses (Chromium hides them behind mDNS names aiortc cannot resolve).
WEBRTC_ARGS = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
               "--disable-features=WebRtcHideLocalIpsWithMdns")

#: The page both publisher and viewer run: a WHIP/WHEP client in a few lines (no trickle: the offer carries every
#: candidate), a canvas "camera" that shows the time as 28 black or white blocks, and a reader of those blocks.
PAGE = """<!doctype html><html><body><video id="v" muted autoplay playsinline></video><script>
async function negotiate(pc, url, headers) {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => { if (pc.iceGatheringState === 'complete') return done();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && done()); });
  const answer = await fetch(url, {method: 'POST', body: pc.localDescription.sdp,
                                   headers: {'Content-Type': 'application/sdp', ...(headers || {})}});
  const text = await answer.text();
  if (answer.status !== 201) { pc.close(); return {status: answer.status, body: text}; }
  await pc.setRemoteDescription({type: 'answer', sdp: text});
  return {status: 201, location: new URL(answer.headers.get('Location'), url).href};
}
async function whip(url, stream, headers) {
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) pc.addTransceiver(track, {direction: 'sendonly'});
  const result = await negotiate(pc, url, headers);
  if (result.status === 201) window.session = {pc, location: result.location};
  return result;
}
async function camera() {
  return navigator.mediaDevices.getUserMedia({audio: true, video: {width: 320, height: 240, frameRate: 25}});
}
const BITS = 28, SIDE = 20;
async function clock() {  // a 320x240 canvas showing Date.now() as blocks, plus the fake microphone
  const canvas = Object.assign(document.createElement('canvas'), {width: 320, height: 240});
  const g = canvas.getContext('2d');
  setInterval(() => { const now = Date.now() % 2 ** BITS; g.fillStyle = '#808080'; g.fillRect(0, 0, 320, 240);
    for (let i = 0; i < BITS; i++) { g.fillStyle = Math.floor(now / 2 ** i) % 2 ? '#fff' : '#000';
      g.fillRect(20 + (i % 14) * SIDE, 80 + Math.floor(i / 14) * SIDE * 2, SIDE, SIDE); } }, 20);
  const audio = await navigator.mediaDevices.getUserMedia({audio: true});
  return new MediaStream([...canvas.captureStream(25).getVideoTracks(), ...audio.getAudioTracks()]);
}
async function end() {
  await fetch(window.session.location, {method: 'DELETE'});
  window.session.pc.close();
}
async function whep(url) {  // plays the stream; counts decoded frames and reads each one's time code
  const pc = new RTCPeerConnection(), video = document.getElementById('v');
  pc.addTransceiver('video', {direction: 'recvonly'}); pc.addTransceiver('audio', {direction: 'recvonly'});
  pc.ontrack = event => { video.srcObject = event.streams[0] || new MediaStream([event.track]); };
  window.frames = 0; window.behind = []; window.codes = new Set();
  const canvas = Object.assign(document.createElement('canvas'), {width: 320, height: 240});
  const g = canvas.getContext('2d', {willReadFrequently: true});
  const onFrame = (now, metadata) => { window.frames = metadata.presentedFrames; g.drawImage(video, 0, 0, 320, 240);
    let code = 0;
    for (let i = 0; i < BITS; i++) { const x = 30 + (i % 14) * SIDE, y = 90 + Math.floor(i / 14) * SIDE * 2;
      if (g.getImageData(x, y, 1, 1).data[1] > 128) code += 2 ** i; }
    window.codes.add(code); window.behind.push(((Date.now() % 2 ** BITS) - code + 2 ** BITS) % 2 ** BITS);
    video.requestVideoFrameCallback(onFrame); };
  video.requestVideoFrameCallback(onFrame);
  const result = await negotiate(pc, url);
  window.viewer = pc;
  return result;
}
</script></body></html>"""


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    port = free_port()
    with live_api(api_backend, tmp_path_factory.mktemp("live-whip"), live={"whip_port": port},
                  edge={"whip_url": f"http://127.0.0.1:{port}"}) as server:
        yield server


@pytest.fixture(scope="module")
def ingest(api) -> Iterator[Any]:
    with live_ingest(api) as service:
        assert service.whip is not None and service.whip.port == api.settings.live.whip_port
        yield service


def _stream(api: Any) -> dict[str, Any]:
    return create_live_stream(api, reconnect_window=0, new_asset_settings={"playback_policies": ["public"]})


def _page(browser: Any, api: Any) -> Any:
    """A page on the edge's origin (so WHIP/WHEP requests are same-origin and getUserMedia has a secure
    context), with :data:`PAGE` in it."""
    page = browser.new_page()
    page.route(f"{api.edge_url}/test/webrtc.html",
               lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE))
    page.goto(f"{api.edge_url}/test/webrtc.html")
    return page


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.3)
    return value


def test_chromium_publishes_over_whip_and_the_stream_plays_over_hls(api, ingest) -> None:
    from tests.browser import chromium

    stream = _stream(api)
    key, live_id = stream["stream_key"], stream["id"]
    [playback] = stream["playback_ids"]
    live_url = f"{api.edge_url}/{playback['id']}.m3u8"
    whip = f"{api.edge_url}/live/v1/whip"
    with chromium(*WEBRTC_ARGS) as browser:
        page = _page(browser, api)
        bad_before, disabled_before = refused("bad_key"), refused("disabled")
        wrong = page.evaluate("async url => whip(url, await camera())", f"{whip}/not-{key}")
        assert wrong["status"] == 401 and '"stream_key_refused"' in wrong["body"], wrong
        assert refused("bad_key") == bad_before + 1
        # the key as a Bearer token (OBS's way), on a disabled stream: 403, nothing started
        assert api.client.put(f"{api.url}/video/v1/live-streams/{live_id}/disable", timeout=10).ok
        disabled = page.evaluate("async ([url, key]) => whip(url, await camera(), {Authorization: 'Bearer ' + key})",
                                 [whip, key])
        assert disabled["status"] == 403 and '"forbidden"' in disabled["body"], disabled
        assert refused("disabled") == disabled_before + 1
        after = get_live_stream(api, live_id)
        assert after["status"] == "disabled" and not after.get("active_asset_id")
        assert api.client.put(f"{api.url}/video/v1/live-streams/{live_id}/enable", timeout=10).ok

        published = page.evaluate("async ([url, key]) => whip(url, await camera(), {Authorization: 'Bearer ' + key})",
                                  [whip, key])
        assert published["status"] == 201 and "/live/v1/whip/sessions/" in published["location"], published
        _wait(lambda: get_live_stream(api, live_id)["status"] == "active", 60, "the stream went active")
        assert requests.get(live_url, timeout=10).status_code == 200
        # FFmpeg decodes 2 s of the live ladder (the 240p rung and the AAC made from the browser's Opus); WebRTC
        # video is variable frame rate (the capture clock's own timestamps), so the frames keep their times
        decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", live_url, "-t", "2", "-fps_mode", "passthrough",
                                  "-f", "null", "-"], capture_output=True, text=True, timeout=120)
        assert decoded.returncode == 0 and decoded.stderr == "", decoded.stderr
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,height", "-of",
                                "csv=p=0", live_url], capture_output=True, text=True, timeout=60)
        assert {"h264,240", "aac"} <= set(probe.stdout.split()), probe.stdout + probe.stderr
        asset_id = get_live_stream(api, live_id)["active_asset_id"]
        page.evaluate("end()")  # DELETE the session resource
    _wait(lambda: get_live_stream(api, live_id)["status"] == "idle", 60, "the stream went idle after the DELETE")
    asset = api.wait_asset(asset_id, timeout=300)
    assert asset["status"] == "ready" and asset["duration"] > 1, asset


def _watch(viewer: Any, whep: str) -> tuple[float, float]:
    """Play ``whep`` on the viewer page until 50 frames are shown, then 3 s more: (frames shown per second,
    distinct time codes per second)."""
    playing = viewer.evaluate("url => whep(url)", whep)
    assert playing["status"] == 201 and "/live/v1/whep/sessions/" in playing["location"], playing
    viewer.wait_for_function("window.frames >= 50", timeout=60_000)
    started, (frames, codes) = time.monotonic(), viewer.evaluate("[window.frames, window.codes.size]")
    viewer.wait_for_timeout(3000)
    now_frames, now_codes = viewer.evaluate("[window.frames, window.codes.size]")
    return (now_frames - frames) / (time.monotonic() - started), (now_codes - codes) / (time.monotonic() - started)


def test_whep_plays_a_whip_publish_in_well_under_a_second(api, ingest) -> None:
    from tests.browser import chromium

    stream = _stream(api)
    key = stream["stream_key"]
    [playback] = stream["playback_ids"]
    whep = f"{api.edge_url}/live/v1/whep/{playback['id']}"
    with chromium(*WEBRTC_ARGS) as browser:
        viewer = _page(browser, api)
        idle = viewer.evaluate("url => whep(url)", whep)  # nobody publishes yet
        assert idle["status"] == 412 and '"asset_not_ready"' in idle["body"], idle
        unknown = viewer.evaluate("url => whep(url)", f"{api.edge_url}/live/v1/whep/{'x' * 20}")
        assert unknown["status"] == 404, unknown

        publisher = _page(browser, api)
        published = publisher.evaluate("async url => whip(url, await clock())", f"{api.edge_url}/live/v1/whip/{key}")
        assert published["status"] == 201, published
        _wait(lambda: ingest.whip.publishing == 1, 30, "the WHIP session started")
        rate, distinct = _watch(viewer, whep)
        behind = sorted(viewer.evaluate("window.behind.slice(-60)"))
        assert ingest.whip.viewers == 1
        viewer.evaluate("window.viewer.close()")
        publisher.evaluate("end()")
    median = behind[len(behind) // 2]
    log.info("WHEP: %.1f frames/s presented (%.1f distinct time codes/s), %d ms behind the publisher (median of %d; "
             "p90 %d ms)", rate, distinct, median, len(behind), behind[int(len(behind) * 0.9)])
    assert rate > 10 and distinct > 10, (rate, distinct)
    assert 0 < median < 1000, behind


def test_whep_plays_an_rtmp_publish_in_under_a_second(api, ingest) -> None:
    """A stream published over RTMP (:mod:`tests.clock_publisher`: FFmpeg's RTMP client through PyAV, 320x240
    at 25 fps, its pictures showing the wall clock) plays over WHEP: its tags are decoded on the ingest while it has a viewer, and no longer once
    the viewer leaves."""
    from tests.browser import chromium

    stream = _stream(api)
    [playback] = stream["playback_ids"]
    # its own process: PyAV holds the GIL while FFmpeg's RTMP client blocks, which would stall this process's
    # ingest loop (the server it is talking to)
    publisher = subprocess.Popen([sys.executable, "-m", "tests.clock_publisher",
                                  f"rtmp://127.0.0.1:{ingest.port}/app/{stream['stream_key']}", "90"],
                                 cwd=Path(__file__).parent.parent, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: ingest.server.publishing == 1, 30, "the RTMP publisher connected")
        with chromium(*WEBRTC_ARGS) as browser:
            viewer = _page(browser, api)
            rate, distinct = _watch(viewer, f"{api.edge_url}/live/v1/whep/{playback['id']}")
            behind = sorted(viewer.evaluate("window.behind.slice(-60)"))
            assert ingest.whip.viewers == 1 and ingest.whip.tapped == 1
            viewer.evaluate("window.viewer.close()")
            _wait(lambda: ingest.whip.viewers == 0 and ingest.whip.tapped == 0, 30, "the tap ended with its viewer")
    finally:
        publisher.terminate()
        publisher.wait(30)
    median = behind[len(behind) // 2]
    log.info("WHEP of an RTMP publish: %.1f frames/s shown (%.1f distinct time codes/s), %d ms behind the "
             "publisher (median of %d; p90 %d ms)", rate, distinct, median, len(behind),
             behind[int(len(behind) * 0.9)])
    assert rate > 10 and distinct > 10, (rate, distinct)
    assert 0 < median < 1000, behind
