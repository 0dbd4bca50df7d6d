"""Job entrypoints: ``ray job submit`` against a real ``ray start --head`` cluster, and the Ray Data batch job.

Both are run the way a user runs them (separate processes), and their outputs are checked with ffprobe and
pyarrow, not with kinoray's own readers.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
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


def _pids_under(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (our head's own temp dir): the head's raylet, GCS,
    dashboard, agents and workers, and nothing of any other Ray on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def stop_head(process: subprocess.Popen[bytes], temp_dir: str) -> None:
    """Stop the head ``ray start --block`` started: its process group, then any process of its temp dir that
    left the group: only processes this fixture started, never every Ray on the machine. Some of Ray's
    processes outlive a SIGTERM by far (the whole 30 s once waited): they get 10 s, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        for pid in _pids_under(temp_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and (process.poll() is None or _pids_under(temp_dir)):
            time.sleep(0.2)
        if process.poll() is not None and not _pids_under(temp_dir):
            return


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``ray start --head --block`` on free ports (never 6379: Redis has it) with its own temp dir, token auth
    on, in its own process group; stopped afterwards by that group and temp dir only."""
    port, dashboard = free_port(), free_port()
    temp_dir = f"/tmp/krjobs-{secrets.token_hex(4)}"  # short: Ray's socket paths must fit in 107 bytes
    # As from an activated virtualenv: the job's ``python`` is the one the cluster was started with.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    start = [RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats",
             f"--temp-dir={temp_dir}"]
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    with log.open("wb") as out:
        process = subprocess.Popen(start, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True,
                             timeout=60).returncode != 0:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the head's job server did not answer: " + log.read_text()[-3000:]
            time.sleep(1)
        yield address, env
    finally:
        stop_head(process, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


#: What ``ray job submit`` says when the head's job agent has not registered yet: the job was not created.
_AGENT_NOT_READY = "No available agent to submit job"


def submit(address: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``ray job submit``, waiting (up to 4 minutes: a loaded machine starts the agent late) for the head's job
    agent rather than racing it."""
    command = [RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
               "python", "-m", "kinoray.jobs.transcode", *args]
    deadline = time.monotonic() + 240
    while True:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        if _AGENT_NOT_READY not in done.stdout + done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(1)


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
