"""Synthetic clips from FFmpeg's lavfi sources (no files needed): for the demo, benchmarks and smoke tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import av.video.frame

__all__ = ["generate_clip"]


def generate_clip(
    path: str | Path,
    *,
    width: int = 1280,
    height: int = 720,
    fps: Fraction | int = 30,
    seconds: float = 10,
    pattern: str = "testsrc2",
    audio: bool = True,
    preset: str = "ultrafast",
    crf: int = 18,
) -> Path:
    """Write an H.264/AAC MP4 from a lavfi ``pattern`` (``testsrc2``, ``mandelbrot``, ``life``, …) plus a
    440 Hz tone. ``pattern`` may also be a full lavfi graph. Costs about one fast x264 encode of the clip."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps)
    source = pattern if "=" in pattern else f"{pattern}=size={width}x{height}:rate={rate}"
    source += f",trim=duration={seconds}" if "duration" not in source else ""
    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(source, format="lavfi") as video_in, av.open(str(tmp), "w") as out:
        video = out.add_stream("libx264", rate=rate, options={"preset": preset, "crf": str(crf)})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio_out = out.add_stream("aac", rate=48000) if audio else None
        for number, frame in enumerate(video_in.decode(video=0)):
            frame = frame.reformat(width=width, height=height, format="yuv420p")
            frame.pts, frame.time_base = number, 1 / rate
            frame.pict_type = av.video.frame.PictureType.NONE
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio_out is not None:
            with av.open(f"sine=frequency=440:sample_rate=48000:duration={seconds}", format="lavfi") as tone:
                resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
                for sound in tone.decode(audio=0):
                    for converted in resampler.resample(sound):
                        for packet in audio_out.encode(converted):
                            out.mux(packet)
                for packet in audio_out.encode():
                    out.mux(packet)
    tmp.replace(path)
    return path
