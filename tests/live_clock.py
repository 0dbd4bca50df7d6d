"""A wall clock burned into a live publisher's picture, machine-readable, for glass-to-glass latency.

Debian's ffmpeg publishes ``testsrc2`` with a strip of :data:`BLOCKS` blocks across the top tenth of the picture
(so it scales with the ladder's rungs): a white block and
a black one at the ends (the reader's threshold) and between them :data:`BITS` blocks, the frame's wall-clock
milliseconds modulo 2**16, most significant bit first. The clock is ffmpeg's own: ``setpts=RTCTIME`` stamps each
strip frame with the wall time (µs) at which ffmpeg made it — with ``-re``, the moment it reads the frame to
encode and send — and ``geq`` draws the bits from that stamp (``T``), after which the timestamps are put back on
the frame-rate grid. A reader takes the 16 bits and the wall clock of the moment it looks (:func:`unwrap`: the
most recent instant with those low bits), which is exact while the latency is under 65 s.

Readers: :func:`read_clock` (numpy, over a decoded frame's luma) and :data:`CLOCK_READER_JS` (a browser: a
canvas holding the video's frame). Used by ``tests/test_live_glass.py`` and ``benchmarks/live.py``.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

BITS = 16
BLOCKS = BITS + 2
_WRAP = 1 << BITS


def clock_source(width: int, height: int, fps: int) -> str:
    """The lavfi graph (one output, ``out0``): ``testsrc2`` of ``width × height`` at ``fps`` under the clock
    strip. The bits are drawn one pixel per block (``geq`` evaluates 18 pixels a frame) and scaled up to the
    strip without interpolation."""
    bit = f"255*mod(floor(mod(floor(T*1000)\\,{_WRAP})/pow(2\\,{BITS}-X))\\,2)"
    lum = f"if(lt(X\\,1)\\,255\\,if(gte(X\\,{BLOCKS - 1})\\,0\\,{bit}))"
    block = width // BLOCKS
    strip = (f"color=c=black:s={BLOCKS}x1:r={fps},settb=AVTB,setpts=RTCTIME,format=gray,geq=lum='{lum}',"
             f"settb=1/{fps},setpts=N,scale={block * BLOCKS}:{max(8, height // 10 // 2 * 2)}:flags=neighbor[strip]")
    return (f"{strip};testsrc2=size={width}x{height}:rate={fps}[main];"
            "[main][strip]overlay=0:0:shortest=1,format=yuv420p[out0]")


def clock_publisher_command(port: int, key: str, *, seconds: int, app: str = "app", size: str = "426x240",
                            fps: int = 25, gop: int | None = None) -> list[str]:
    """Debian's ffmpeg publishing ``seconds`` of the clocked ``testsrc2`` + a sine in real time, H.264 + AAC over
    RTMP (a keyframe every ``gop`` frames, default one a second, as :func:`tests.test_live_rtmp.publisher_command`)."""
    width, height = (int(side) for side in size.split("x"))
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", clock_source(width, height, fps),
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(gop or fps),
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv", f"rtmp://127.0.0.1:{port}/{app}/{key}"]


def read_clock(luma: np.ndarray) -> int | None:
    """The 16 clock bits of a frame's luma plane (``height × width``, the publisher's size or scaled), or
    ``None`` where the strip's white and black blocks are not told apart (not a clocked frame)."""
    height, width = luma.shape
    block = width // BLOCKS
    top, bottom = round(height * 6 / 240), max(round(height * 18 / 240), round(height * 6 / 240) + 1)
    levels = [float(luma[top:bottom, int(i * block + block / 4):int(i * block + 3 * block / 4)].mean())
              for i in range(BLOCKS)]
    white, black = levels[0], levels[-1]
    if white - black < 100:
        return None
    value = 0
    for level in levels[1:-1]:
        value = value * 2 + (level > (white + black) / 2)
    return value


def unwrap(low_bits: int, reference_ms: float) -> float:
    """The latest wall-clock millisecond at or before ``reference_ms`` whose low 16 bits are ``low_bits``."""
    return reference_ms - (reference_ms - low_bits) % _WRAP


#: ``readClock(video, canvas)`` in a page: draws the video's current frame and returns its 16 clock bits, or
#: ``null`` (the same reading as :func:`read_clock`).
CLOCK_READER_JS = f"""
function readClock(video, canvas) {{
  const width = video.videoWidth, height = video.videoHeight;
  if (!width || !height) return null;
  if (canvas.width !== width || canvas.height !== height) {{ canvas.width = width; canvas.height = height; }}
  const context = canvas.getContext('2d', {{willReadFrequently: true}});
  context.drawImage(video, 0, 0, width, height);
  const top = Math.round(height * 6 / 240), bottom = Math.max(Math.round(height * 18 / 240), top + 1);
  const pixels = context.getImageData(0, top, width, bottom - top).data;
  const block = Math.floor(width / {BLOCKS}), levels = [];
  for (let i = 0; i < {BLOCKS}; i++) {{
    let sum = 0, count = 0;
    for (let y = 0; y < bottom - top; y++) {{
      for (let x = Math.floor(i * block + block / 4); x < Math.floor(i * block + 3 * block / 4); x++) {{
        const at = (y * width + x) * 4;
        sum += 0.299 * pixels[at] + 0.587 * pixels[at + 1] + 0.114 * pixels[at + 2]; count++;
      }}
    }}
    levels.push(sum / count);
  }}
  const white = levels[0], black = levels[{BLOCKS - 1}];
  if (white - black < 100) return null;
  let value = 0;
  for (let i = 1; i < {BLOCKS - 1}; i++) value = value * 2 + (levels[i] > (white + black) / 2 ? 1 : 0);
  return value;
}}
function unwrapClock(lowBits, referenceMs) {{
  return referenceMs - ((((referenceMs - lowBits) % {_WRAP}) + {_WRAP}) % {_WRAP});
}}
"""


_GLASS_PAGE = """<!doctype html><html><body><video id="v" muted playsinline></video><canvas id="c" hidden></canvas>
<script src="/hls.js"></script><script>
CLOCK_READER
  window.samples = []; window.fatal = [];
  const video = document.getElementById('v'), canvas = document.getElementById('c');
  // a low-latency player: catches up with the live edge by playing up to 1.5x (hls.js's default is 1: never)
  const hls = window.hls = new Hls({lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5});
  hls.on(Hls.Events.ERROR, (event, data) => { if (data.fatal) window.fatal.push(data.details); });
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play());
  hls.loadSource('SOURCE'); hls.attachMedia(video);
  function onFrame(now, meta) {
    const shown = performance.timeOrigin + meta.expectedDisplayTime;
    const low = readClock(video, canvas);
    const playing = hls.playingDate;
    if (low !== null && playing) {
      window.samples.push({captured: unwrapClock(low, shown), shown: shown, mediaTime: meta.mediaTime,
                           dated: playing.getTime(), wall: Date.now()});
    }
    video.requestVideoFrameCallback(onFrame);
  }
  video.requestVideoFrameCallback(onFrame);
</script></body></html>"""


def glass_page(source: str) -> str:
    """A page playing the HLS stream at ``source`` with hls.js (``/hls.js`` on the page's server) in
    ``lowLatencyMode`` — catching up with the live edge at up to 1.5× — that reads the burned-in clock of every
    frame Chromium presents (``requestVideoFrameCallback``) against its expected display time, and
    ``hls.playingDate`` against ``Date.now()``: ``window.samples``."""
    return _GLASS_PAGE.replace("CLOCK_READER", CLOCK_READER_JS).replace("SOURCE", source)


def glass_to_glass(page_url: str, *, frames: int = 60, timeout: float = 90) -> dict[str, Any]:
    """Play ``page_url``'s stream (a :func:`glass_page`) in Chromium until ``frames`` frames were read after 8 s
    of playback (hls.js has caught up with its target): the medians (seconds) of the burned-in clock's latency
    (``clock``) and of the playlist dates' (``dated``), the samples, and what hls.js says."""
    from tests.browser import chromium

    with chromium() as browser:
        page = browser.new_page()
        page.goto(page_url)
        page.wait_for_function("document.getElementById('v').currentTime > 8", timeout=timeout * 1000)
        skip = page.evaluate("window.samples.length")
        page.wait_for_function(f"window.samples.length >= {skip + frames}", timeout=timeout * 1000)
        samples = page.evaluate(f"window.samples.slice({skip})")
        facts = page.evaluate("({fatal: window.fatal, latency: window.hls.latency, target: window.hls.targetLatency,"
                              " width: document.getElementById('v').videoWidth})")
    clock = [(sample["shown"] - sample["captured"]) / 1000 for sample in samples]
    dated = [(sample["wall"] - sample["dated"]) / 1000 for sample in samples]
    return {"clock": statistics.median(clock), "clock_max": max(clock), "dated": statistics.median(dated),
            "samples": samples, **facts}
