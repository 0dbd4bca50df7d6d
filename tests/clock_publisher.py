"""An RTMP publisher whose pictures show the wall clock, for measuring how far behind a viewer is:
``python -m tests.clock_publisher rtmp://HOST:PORT/app/KEY SECONDS``. 320x240 at 25 fps (libx264
``zerolatency``, a keyframe a second) with AAC silence, through PyAV (FFmpeg's RTMP client). Each picture shows
``time.time()`` in milliseconds modulo 2^28 as 28 black or white 20-pixel blocks on gray — bit ``i`` at
``(20 + (i % 14) * 20, 80 + (i // 14) * 40)`` — the layout tests/test_live_whip.py's page draws and reads.

A process of its own: PyAV holds the GIL while FFmpeg's RTMP client blocks on the network, which would stall a
server running in the same process.
"""

from __future__ import annotations

import sys
import time

import av
import numpy as np

BITS, SIDE = 28, 20


def clock_picture(now_ms: int) -> np.ndarray:
    """A 320x240 RGB picture of ``now_ms`` (modulo 2^28) as blocks."""
    rgb = np.full((240, 320, 3), 128, dtype=np.uint8)
    for bit in range(BITS):
        x, y = 20 + (bit % 14) * SIDE, 80 + (bit // 14) * SIDE * 2
        rgb[y:y + SIDE, x:x + SIDE] = 255 if now_ms >> bit & 1 else 0
    return rgb


def publish(url: str, seconds: float) -> None:
    out = av.open(url, "w", format="flv")
    video = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "tune": "zerolatency", "g": "25"})
    video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
    audio = out.add_stream("aac", rate=48_000, layout="stereo")
    started, index, samples = time.monotonic(), 0, 0
    try:
        while index < seconds * 25:
            time.sleep(max(0.0, started + index / 25 - time.monotonic()))
            picture = av.VideoFrame.from_ndarray(clock_picture(int(time.time() * 1000) % 2**BITS), format="rgb24")
            picture = picture.reformat(format="yuv420p")
            picture.pts = index
            out.mux(video.encode(picture))
            while samples < (index + 1) * 48_000 // 25:
                sound = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
                for plane in sound.planes:
                    plane.update(bytes(plane.buffer_size))
                sound.sample_rate, sound.pts = 48_000, samples
                out.mux(audio.encode(sound))
                samples += 1024
            index += 1
    finally:
        out.close()


if __name__ == "__main__":
    publish(sys.argv[1], float(sys.argv[2]))
