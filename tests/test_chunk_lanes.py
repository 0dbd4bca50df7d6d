"""Per-rendition encoder threads inside a chunk: same bytes as encoding one after another, errors surface."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import pytest

from kinoray.encoders import get_backend
from kinoray.encoders.base import Capability, EncoderSession, EncoderSettings
from kinoray.encoders.determinism import DETERMINISTIC_HEAP
from kinoray.errors import EncoderError
from kinoray.media import index_keyframes, plan_chunks, probe
from kinoray.media.ladder import build_ladder
from kinoray.media.transcode import EncodeOptions, chunk_store_path, transcode_chunk
from tests.media import MATRIX, make_media

LADDER = (180, 120, 90)
ROOT = Path(__file__).resolve().parents[1]


def _chunk_inputs(source: Path):
    info = probe(str(source))
    plan = plan_chunks(info, index_keyframes(str(source), info.video.index), segment_seconds=1, chunk_seconds=2)
    return plan, build_ladder(info.video, LADDER, "h264")


def _store_bytes(work: Path, ladder, chunk_index: int) -> dict[str, tuple[bytes, str]]:
    out = {}
    for rendition in ladder:
        base = chunk_store_path(work, rendition.name, chunk_index)
        out[rendition.name] = (base.with_suffix(".bin").read_bytes(), base.with_suffix(".json").read_text())
    return out


def _clip_with_missing_frames(path: Path, missing: set[int]) -> Path:
    """A 30 fps 320x180 H.264 clip of 150 slots, with no picture at the ``missing`` ones (the CFR rule repeats
    the previous frame there, so one decoded frame object fills two output slots)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast", "g": "30"})
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        source = av.open("testsrc2=size=320x180:rate=30", format="lavfi")
        for number, frame in enumerate(source.decode(video=0)):
            if number == 150:
                break
            if number in missing:
                continue
            picture = frame.reformat(format="yuv420p")
            picture.pts, picture.time_base = number, Fraction(1, 30)
            container.mux(stream.encode(picture))
        source.close()
        container.mux(stream.encode())
    return path


def encode_both_ways(source: str, work: str) -> dict:
    """Chunk 0 of ``source`` encoded with and without rendition threads: store digests and counters. Runs in a
    child process with the workers' fixed heap fill (libx264 reads some heap bytes it never wrote — at the
    160-wide 90p rung among others — so without it two encodes in one process can differ anyway)."""
    plan, ladder = _chunk_inputs(Path(source))
    out = {"top_is_source": ladder[0].width == plan.video.display_width}
    for label, parallel in (("threads", True), ("serial", False)):
        result = transcode_chunk(plan, plan.chunks[0], ladder, get_backend("h264", "libx264"),
                                 work_dir=Path(work) / label,
                                 options=EncodeOptions(decoder="cpu", parallel_renditions=parallel))
        stores = _store_bytes(Path(work) / label, ladder, 0)
        out[label] = {"stores": {name: [hashlib.sha256(data).hexdigest(), meta] for name, (data, meta) in stores.items()},
                      "keyframes": [list(r.keyframe_frames) for r in result.renditions],
                      "repeated": result.repeated_frames}
    return out


@pytest.mark.parametrize("name", ["gaps", "h264_30fps"])
def test_threaded_renditions_write_the_bytes_of_a_serial_encode(name: str, media_dir: Path, tmp_path: Path):
    """The 320x180 source is the top rung as decoded (the decoded frame object goes to the encoder thread), and
    the clip with gaps repeats decoded frames (the same object fills two slots): the encoder threads must
    still see each slot's own pts and write exactly what encoding the rungs one after another writes."""
    source = (_clip_with_missing_frames(tmp_path / "gaps.mp4", {20}) if name == "gaps"
              else make_media(MATRIX[name], media_dir))
    code = ("import json, sys; from tests.test_chunk_lanes import encode_both_ways; "
            "print(json.dumps(encode_both_ways(sys.argv[1], sys.argv[2])))")
    run = subprocess.run([sys.executable, "-c", code, str(source), str(tmp_path / "work")], check=True,
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, **DETERMINISTIC_HEAP})
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["top_is_source"]
    if name == "gaps":
        assert found["threads"]["repeated"] == 1
    assert found["threads"] == found["serial"]


@dataclass
class _FailingBackend:
    """libx264, except that the ``fail_height`` rung's session raises on its ``fail_at``-th frame."""

    fail_height: int
    fail_at: int
    name: str = "libx264"
    codec: str = "h264"
    hardware: bool = False

    def probe(self) -> Capability:
        return Capability(True, "test")

    def open(self, settings: EncoderSettings) -> EncoderSession:
        session = get_backend("h264", "libx264").open(settings)
        if settings.height != self.fail_height:
            return session
        return _FailingSession(session, self.fail_at)


class _FailingSession:
    def __init__(self, inner: EncoderSession, fail_at: int) -> None:
        self.inner, self.fail_at, self.seen = inner, fail_at, 0
        self.codec_name, self.extradata = inner.codec_name, inner.extradata

    def encode(self, frame: av.VideoFrame, force_idr: bool) -> list[av.Packet]:
        self.seen += 1
        if self.seen == self.fail_at:
            raise EncoderError(f"encoder gave up at frame {self.seen}")
        return self.inner.encode(frame, force_idr)

    def flush(self) -> list[av.Packet]:
        return self.inner.flush()

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("parallel", [True, False])
def test_a_failing_rendition_errors_the_chunk_and_commits_nothing(parallel: bool, media_dir: Path, tmp_path: Path):
    plan, ladder = _chunk_inputs(make_media(MATRIX["h264_30fps"], media_dir))
    before = threading.active_count()
    with pytest.raises(EncoderError, match="gave up at frame 7"):
        transcode_chunk(plan, plan.chunks[0], ladder, _FailingBackend(fail_height=ladder[1].height, fail_at=7),
                        work_dir=tmp_path, options=EncodeOptions(decoder="cpu", parallel_renditions=parallel))
    assert threading.active_count() == before  # every lane thread ended
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no store, not even a temporary file
    assert Fraction(plan.chunks[0].frame_count) > 7
