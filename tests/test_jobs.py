"""Job entrypoints: ``ray job submit`` against a real ``ray start --head`` cluster, and the Ray Data batch job.

Both are run the way a user runs them (separate processes), and their outputs are checked with ffprobe and
pyarrow, not with kinoray's own readers.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kinoray.store import ObjectStore
from tests import oracles
from tests.conftest import free_port
from tests.media import MediaSpec, make_bad_media, make_media

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
CLIP = MediaSpec(name="jobs_clip", width=320, height=180, duration_s=Fraction(8), gop=30)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``ray start --head`` on free ports (never 6379: Redis has it), token auth on; stopped afterwards."""
    port, dashboard = free_port(), free_port()
    # As from an activated virtualenv: the job's ``python`` is the one the cluster was started with.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    start = [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats"]
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def submit(address: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
               "python", "-m", "kinoray.jobs.transcode", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_ray_job_submit_transcodes_on_the_cluster(ray_head, media_dir, tmp_path):
    address, env = ray_head
    source = make_media(CLIP, media_dir)
    out = tmp_path / "asset"
    done = submit(address, env, "--input", str(source), "--output", str(out), "--ladder", "180,144",
                  "--segment-seconds", "2", "--chunk-seconds", "4", "--quiet")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    summary = json.loads(next(line for line in done.stdout.splitlines() if line.startswith('{"result"')))
    assert summary["job"]["state"] == "ready" and summary["job"]["chunks_done"] == summary["job"]["chunks_total"]
    assert summary["result"]["encoder"] == "libx264"
    assert oracles.count_frames(out / "144p" / "index.m3u8") == 240
    assert oracles.decode_errors(out / "master.m3u8") == ""


def test_ray_job_submit_bad_input_fails_with_typed_error(ray_head, media_dir, tmp_path):
    address, env = ray_head
    done = submit(address, env, "--input", str(make_bad_media("garbage", media_dir)), "--output",
                  str(tmp_path / "asset"), "--quiet")
    assert done.returncode != 0
    assert '"type": "invalid_media"' in done.stdout + done.stderr
    assert not (tmp_path / "asset").exists()


def test_batch_job_over_s3_manifest_with_bad_files(s3_bucket, media_dir, tmp_path):
    """A Parquet manifest on S3 with good, corrupt, garbage and missing inputs; outputs on S3.
    Each bad video errors its own row; good ones are complete, playable packages."""
    bucket = ObjectStore(f"s3://{s3_bucket}")
    good = make_media(CLIP, media_dir)
    bucket.put_file(good, "in/good.mp4")
    bucket.put_file(make_bad_media("corrupt", media_dir), "in/corrupt.mp4")
    rows = [
        {"id": "good", "input": f"s3://{s3_bucket}/in/good.mp4", "ladder": "180,144"},
        {"id": "local", "input": str(good), "ladder": "144"},
        {"id": "corrupt", "input": f"s3://{s3_bucket}/in/corrupt.mp4", "ladder": None},
        {"id": "garbage", "input": str(make_bad_media("garbage", media_dir)), "ladder": None},
        {"id": "missing", "input": f"s3://{s3_bucket}/in/nope.mp4", "ladder": None},
    ]
    manifest = tmp_path / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    bucket.put_file(manifest, "manifest.parquet")
    env = {**os.environ, "KINORAY_DATA_DIR": str(tmp_path / "data"), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "kinoray.jobs.batch", "--manifest", f"s3://{s3_bucket}/manifest.parquet",
         "--output", f"s3://{s3_bucket}/out", "--segment-seconds", "2", "--chunk-seconds", "4"],
        env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ready"] == 2 and sorted(summary["errored"]) == ["corrupt", "garbage", "missing"]
    local = tmp_path / "results.parquet"
    bucket.get_file("out/results.parquet", local)
    results = {row["id"]: row for row in pq.read_table(local).to_pylist()}
    assert list(results) == ["good", "local", "corrupt", "garbage", "missing"]
    assert results["corrupt"]["status"] == "errored" and results["corrupt"]["error_type"] == "invalid_media"
    assert "corrupt" in results["corrupt"]["error"]
    assert results["missing"]["error_type"] == "invalid_media"
    for video, rungs in (("good", ("180p", "144p")), ("local", ("144p",))):
        row = results[video]
        assert row["status"] == "ready" and row["frames"] == 240 and row["renditions"] == len(rungs)
        assert row["encoder"] == "libx264" and row["bytes"] > 0 and row["error"] is None
        download = tmp_path / video
        for key in bucket.list(f"out/{video}"):
            bucket.get_file(key, download / key.removeprefix(f"out/{video}/"))
        for rung in rungs:
            assert oracles.count_frames(download / rung / "index.m3u8") == 240
    assert not bucket.list("out/corrupt") and not bucket.list("out/garbage")
    assert not list((tmp_path / "data" / "work").rglob("*.bin")), "work outputs left behind"


@pytest.mark.parametrize(("manifest", "message"), [
    ("id,path\na,/x.mp4\n", "no 'input' column"),
    ("id,input\na,/x.mp4\na,/y.mp4\n", "repeats ids"),
    ("id,input,ladder\na,/x.mp4,big\n", "bad ladder"),
    ("id,input\n../up,/x.mp4\n", "cannot name a folder"),
    (None, "cannot read manifest"),
])
def test_bad_manifest_is_a_typed_error(manifest, message, tmp_path, capsys):
    from kinoray.jobs.batch import main

    path = tmp_path / "manifest.csv"
    if manifest is not None:
        path.write_text(manifest)
    assert main(["--manifest", str(path), "--output", str(tmp_path / "out")]) == 2
    error = json.loads(capsys.readouterr().err.strip().splitlines()[-1])["error"]
    assert error["type"] == "configuration_error" and message in error["messages"][0]
    assert not (tmp_path / "out").exists()
