"""End to end over HTTP against the real platform: ``kinoray up`` (local Ray + Serve: API ingress and job
runner) as a subprocess, on SQLite and on PostgreSQL.

A direct upload with tuspy (the official tus client) is cut mid-upload and resumed; the stored input is
byte-identical to the file; the asset becomes ready with Mux's fields, its HLS output decodes with Debian's
ffprobe; a local webhook receiver gets ``video.asset.ready`` with a valid ``Mux-Signature``; list, pagination
and delete work; a platform killed mid-transcode and started again finishes the asset. HAProxy ports taken
between their pick and its bind are picked again; a given port in use is a typed configuration error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from kinoray.media.synthetic import generate_clip
from tests.api_server import Receiver
from tests.conftest import free_port
from tests.test_live_rtmp import publisher_command

pytestmark = pytest.mark.slow


class Platform:
    """``kinoray up`` in a subprocess with its own data dir and database."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self.data_dir, self.port, self.api_port, self.rtmp_port = data_dir, free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "KINORAY_DATA_DIR": str(data_dir), "KINORAY_API__ALLOW_PRIVATE_INPUTS": "true",
                    "KINORAY_SERVE__POLL_SECONDS": "0.2", "KINORAY_TRANSCODE__CHUNK_SECONDS": "4",
                    "KINORAY_ENVIRONMENT": "test"}
        if database_url:
            self.env["KINORAY_DATABASE_URL"] = database_url
        self.process: subprocess.Popen[bytes] | None = None
        #: the command line before ``up`` (a test may wrap kinoray's CLI), and sockets a test holds meanwhile
        self.launcher = [sys.executable, "-m", "kinoray.cli"]
        self.held: list[socket.socket] = []

    def start(self, *extra: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = (self.data_dir / f"up-{time.time_ns()}.log").open("wb")
        self.process = subprocess.Popen(
            [*self.launcher, "up", "--port", str(self.port), "--api-port", str(self.api_port),
             "--rtmp-port", str(self.rtmp_port), "--data-dir", str(self.data_dir), *extra],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kinoray up did not start:\n{self.output()}")
            time.sleep(0.5)
        credentials = json.loads((self.data_dir / "credentials.json").read_text())
        self.client = requests.Session()
        self.client.auth = (credentials["token_id"], credentials["token_secret"])

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()

    def wait_asset(self, asset_id: str, states: tuple[str, ...] = ("ready", "errored"),
                   timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            data = self.client.get(f"{self.url}/video/v1/assets/{asset_id}", timeout=10).json()["data"]
            if data["status"] in states or data["progress"]["state"] in states:
                return data
            if time.monotonic() > deadline:
                raise TimeoutError(f"asset {asset_id}: {data}\n{self.output()}")
            time.sleep(0.3)


#: ``kinoray up`` whose first picks of a free port (HAProxy's stats and metrics ports) are the ports given in
#: argv[1]: a fault injected into a real start, as if another process had taken them after they were picked
#: (``KINORAY_TEST_INGRESS_ATTEMPTS`` sets how many starts it may try).
_FIRST_PICKS_TAKEN = """
import os, sys
import kinoray.serve.launch as launch
launch.INGRESS_ATTEMPTS = int(os.environ.get("KINORAY_TEST_INGRESS_ATTEMPTS", launch.INGRESS_ATTEMPTS))
taken = iter(int(port) for port in sys.argv[1].split(","))
pick = launch._free_port
launch._free_port = lambda: next(taken, None) or pick()
from kinoray.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _configs_naming(ports: list[int]) -> list[Path]:
    """HAProxy configurations of any `kinoray up` on this machine that bind one of ``ports``."""
    found = []
    for config in Path(tempfile.gettempdir()).glob("kinoray-haproxy-*/*/haproxy.cfg"):
        with contextlib.suppress(OSError):  # another run's, removed meanwhile
            text = config.read_text(errors="replace")
            if any(f":{port}\n" in text for port in ports):
                found.append(config)
    return found


def assert_ingress_ports_picked_again(running: Platform) -> None:
    """``running`` was started with its first picks for HAProxy's ports taken (``running.held``): it started
    its cluster again on fresh ones, the failed attempt left no HAProxy directory behind, and the ports stay
    with their holder."""
    ports = [int(sock.getsockname()[1]) for sock in running.held]
    assert len(ports) == 2 and "ingress port taken before HAProxy bound it" in running.output(), running.output()
    assert requests.get(f"http://127.0.0.1:{running.api_port}/healthz", timeout=30).status_code == 200
    assert _configs_naming(ports) == []
    for sock, port in zip(running.held, ports, strict=True):  # still the holder's: a connection reaches it
        sock.settimeout(10)
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            sock.accept()[0].close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clip(tmp_path_factory.mktemp("e2e") / "clip.mp4", width=640, height=360, fps=30, seconds=8)


@pytest.fixture()
def platform(tmp_path: Path):
    """``kinoray up`` on PostgreSQL, the production database (the other ``kinoray up`` tests below run on the
    embedded SQLite default; the control plane's own tests cover both). A fault is injected into its start: the
    ports first picked for HAProxy's stats and metrics are taken, held here on every address as another process
    on the node could after they were picked (:func:`assert_ingress_ports_picked_again`)."""
    from tests.api_server import POSTGRES_URL, Backend

    if not POSTGRES_URL:
        pytest.skip("KINORAY_TEST_POSTGRES_URL is empty")
    backend = Backend("postgresql", tmp_path)
    running = Platform(tmp_path / "data", backend.new_url())
    running.held = [socket.create_server(("0.0.0.0", 0)) for _ in range(2)]  # noqa: S104 - as a node's process
    running.launcher = [sys.executable, "-c", _FIRST_PICKS_TAKEN,
                        ",".join(str(sock.getsockname()[1]) for sock in running.held)]
    try:
        running.start()
        yield running
    finally:
        running.stop()
        for sock in running.held:
            sock.close()
        backend.close()


def _cut_patch(upload_url: str, offset: int, data: bytes) -> None:
    """Send a tus PATCH declaring ``len(data)`` bytes, send only half of them, then drop the connection."""
    host, port = upload_url.split("//", 1)[1].split("/", 1)[0].split(":")
    path = "/" + upload_url.split("//", 1)[1].split("/", 1)[1]
    with socket.create_connection((host, int(port))) as sock:
        head = (f"PATCH {path} HTTP/1.1\r\nHost: {host}:{port}\r\nTus-Resumable: 1.0.0\r\n"
                f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
                f"Content-Length: {len(data)}\r\n\r\n")
        sock.sendall(head.encode() + data[: len(data) // 2])
        time.sleep(0.5)


def assert_shared_node_placement(root: int) -> None:
    """``kinoray up``'s CPU order on its node (kinoray.priority), as the kernel reports it: the edge's processes
    confined to the last half of the CPUs at niceness 10, the API's replicas at 0 (not Ray's default 15), the
    job runner at 15. Only system calls on the processes (``sched_getaffinity``, ``getpriority``): walking their
    ``/proc/PID/task`` directories would leave dentries that two processes reaping children at once at shutdown
    can livelock invalidating (seen on this kernel, 6.18); ``tests/test_priority.py`` checks every thread."""
    from kinoray.priority import shared_node_edge_cpus

    allowed = sorted(os.sched_getaffinity(root))
    edge_cpus = set(allowed[-shared_node_edge_cpus(len(allowed)):]) if len(allowed) > 1 else set(allowed)
    kinds: dict[str, list[int]] = {"edge": [], "api": [], "runner": []}
    for pid in _descendants(root, set()):
        command = _cmdline(pid)
        if b"kinoray.cli\x00edge" in command:
            kinds["edge"] += [pid, *_descendants(pid, set())]
        elif command.startswith(b"ray::ServeReplica:kinoray:kinoray-api"):
            kinds["api"].append(pid)
        elif command.startswith(b"ray::ServeReplica:kinoray:kinoray-runner"):
            kinds["runner"].append(pid)
    assert len(set(kinds["edge"])) >= 2 and kinds["api"] and kinds["runner"], kinds
    for pid in set(kinds["edge"]):  # the edge's main process and its Granian workers
        assert os.sched_getaffinity(pid) == edge_cpus, (pid, os.sched_getaffinity(pid), edge_cpus)
        assert os.getpriority(os.PRIO_PROCESS, pid) == 10, pid
    for pid in kinds["api"]:
        assert os.sched_getaffinity(pid) == set(allowed) and os.getpriority(os.PRIO_PROCESS, pid) == 0, pid
    for pid in kinds["runner"]:
        assert os.getpriority(os.PRIO_PROCESS, pid) == 15, pid


def test_upload_cut_resume_ready_webhook_list_delete(platform: Platform, clip: Path) -> None:
    from tusclient.client import TusClient

    from kinoray.control.webhooks import verify

    assert_ingress_ports_picked_again(platform)
    receiver = Receiver()
    hook = platform.client.post(f"{platform.url}/system/v1/webhook-endpoints", json={"url": receiver.url})
    assert hook.status_code == 201, hook.text
    secret = hook.json()["data"]["secret"]

    created = platform.client.post(f"{platform.url}/video/v1/uploads", json={
        "cors_origin": "*", "new_asset_settings": {"playback_policies": ["public"], "passthrough": "e2e"}})
    assert created.status_code == 201, created.text
    upload = created.json()["data"]
    data = clip.read_bytes()

    # tus creation and a first chunk with tuspy, then a PATCH cut off half-way through its body
    client = TusClient(upload["url"])
    creation = requests.post(upload["url"], headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(len(data))})
    assert creation.status_code == 201, creation.text
    chunk = 200 * 1024
    with clip.open("rb") as stream:
        first = client.uploader(file_stream=stream, url=upload["url"], chunk_size=chunk)
        first.upload_chunk()
    assert first.offset == chunk
    _cut_patch(upload["url"], chunk, data[chunk: chunk + 256 * 1024])
    # The replica keeps what it read before the drop (at most half the declared body); bytes still buffered
    # in Serve's proxy when the client vanished may be discarded, so the prefix can also be empty.
    time.sleep(2)
    offset = int(requests.head(upload["url"], headers={"Tus-Resumable": "1.0.0"}).headers["Upload-Offset"])
    assert chunk <= offset <= chunk + 128 * 1024, offset

    # a new tuspy uploader resumes from the server's offset and finishes
    with clip.open("rb") as stream:
        uploader = client.uploader(file_stream=stream, url=upload["url"], chunk_size=chunk)
        assert uploader.offset == offset
        uploader.upload()

    status = platform.client.get(f"{platform.url}/video/v1/uploads/{upload['id']}").json()["data"]
    assert status["status"] == "asset_created", status
    asset = platform.wait_asset(status["asset_id"])
    assert asset["status"] == "ready", asset
    stored = platform.data_dir / "storage" / "assets" / asset["id"] / "input"
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert asset["upload_id"] == upload["id"] and asset["passthrough"] == "e2e"
    assert abs(asset["duration"] - 8.0) < 0.1 and asset["aspect_ratio"] == "16:9"
    assert asset["resolution_tier"] == "720p" and asset["max_stored_frame_rate"] == 30
    assert {t["type"] for t in asset["tracks"]} == {"video", "audio"}
    assert asset["video_codec"] == "h264"
    assert asset["encoder_backend"] == "libx264" and asset["progress"] == {"state": "completed", "progress": 100.0}
    assert_shared_node_placement(platform.process.pid)

    master = platform.data_dir / "storage" / "assets" / asset["id"] / "media" / "master.m3u8"
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames", "-of", "csv=p=0", str(master)],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and int(probe.stdout.split()[0]) == 240, probe.stdout + probe.stderr

    deadline = time.monotonic() + 30
    while not receiver.events("video.asset.ready") and time.monotonic() < deadline:
        time.sleep(0.2)
    [(headers, body)] = receiver.events("video.asset.ready")
    verify(secret, body, headers["mux-signature"])
    event = json.loads(body)
    assert event["object"] == {"type": "asset", "id": asset["id"]} and event["data"]["status"] == "ready"
    assert receiver.events("video.asset.created") and receiver.events("video.upload.asset_created")

    listed = platform.client.get(f"{platform.url}/video/v1/assets", params={"limit": 1}).json()
    assert [a["id"] for a in listed["data"]] == [asset["id"]] and listed["next_cursor"] is None
    assert platform.client.delete(f"{platform.url}/video/v1/assets/{asset['id']}").status_code == 204
    assert not (platform.data_dir / "storage" / "assets" / asset["id"]).exists()
    deadline = time.monotonic() + 30
    while not receiver.events("video.asset.deleted") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert receiver.events("video.asset.deleted")


def test_a_platform_whose_cluster_dies_exits_and_finishes_the_interrupted_job_on_restart(tmp_path: Path) -> None:
    """The Ray cluster under `kinoray up` dies mid-transcode: `kinoray up` exits non-zero (so a supervisor restarts
    it), and the restarted platform finishes the accepted asset with exactly one webhook. Then readiness."""
    source = generate_clip(tmp_path / "long.mp4", width=1280, height=720, fps=30, seconds=16)
    receiver = Receiver()
    running = Platform(tmp_path / "data", None)
    # short leases: the dead runner's claim runs out while the platform restarts, not a minute later
    running.env.update({"KINORAY_API__ALLOW_FILE_INPUTS": "true", "KINORAY_JOBS__LEASE_SECONDS": "8",
                        "KINORAY_JOBS__RECONCILE_SECONDS": "2"})
    running.start()
    try:
        hook = running.client.post(f"{running.url}/system/v1/webhook-endpoints", json={"url": receiver.url})
        assert hook.status_code == 201, hook.text
        answer = running.client.post(f"{running.url}/video/v1/assets",
                                     json={"inputs": [{"url": f"file://{source}"}], "playback_policies": ["public"]})
        assert answer.status_code == 201, answer.text
        asset_id = answer.json()["data"]["id"]
        interrupted = running.wait_asset(asset_id, states=("transcoding", "ready", "errored"))
        assert interrupted["status"] == "preparing", interrupted  # the kill lands mid-transcode

        # the Ray cluster under it dies: every process our own `kinoray up` started for Ray (the control store,
        # the raylet and the workers under it: Serve's controller, HAProxy, the replicas, the runner, the
        # encoders), not its edge. The API stops answering; `kinoray up` notices within its watchdog's bound
        # (3 probes 5 s apart) and exits non-zero, before Ray's own 60 s wait for its control store ends
        assert running.process is not None
        edge = {pid for pid in _children(running.process.pid) if b"kinoray.cli\x00edge" in _cmdline(pid)}
        # frozen first, then killed: a process forked between a look at the tree and the kill (Serve reloading
        # its HAProxy, say) would outlive its killed parent, orphaned, and hold the API's port past the restart
        ray_processes: set[int] = set()
        while fresh := set(_descendants(running.process.pid, skip=edge)) - ray_processes:
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            ray_processes |= fresh
        assert any(b"gcs_server" in _cmdline(pid) for pid in ray_processes), ray_processes
        for pid in ray_processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        assert running.process.wait(timeout=90) == 1, running.output()
        assert "stopped answering" in running.output(), running.output()
        assert time.monotonic() - killed < 45

        running.start()
        restarted = time.monotonic()
        asset = running.wait_asset(asset_id, timeout=300)
        assert asset["status"] == "ready", asset
        assert abs(asset["duration"] - 16.0) < 0.1
        deadline = time.monotonic() + 30
        while not receiver.events("video.asset.ready") and time.monotonic() < deadline:
            time.sleep(0.2)
        ready_events = [json.loads(body) for _, body in receiver.events("video.asset.ready")]
        assert [event["object"]["id"] for event in ready_events] == [asset_id], ready_events
        assert time.monotonic() - restarted < 300

        # readiness names what it checked, through the edge and on the API's own port
        for base in (running.url, f"http://127.0.0.1:{running.api_port}"):
            ready = requests.get(f"{base}/readyz", timeout=30)
            assert ready.status_code == 200, ready.text
            checks = ready.json()["checks"]
            assert {"database", "storage", "runner", "cluster"} <= set(checks) and all(
                check["ok"] for check in checks.values()), checks
        assert requests.get(f"{running.url}/edge/readyz", timeout=30).json()["status"] == "ready"
    finally:
        running.stop()


def test_make_run_demo_uploads_and_serves_a_playable_stream(tmp_path: Path) -> None:
    """What ``make run`` does: ``kinoray up --demo`` uploads a generated clip over tus and prints a playback URL
    that an independent client (Debian ffmpeg) plays end to end through Serve."""
    import re

    running = Platform(tmp_path / "data", None)
    running.start("--demo")
    try:
        deadline = time.monotonic() + 300
        while "playback URL:" not in running.output():
            assert running.process is not None and running.process.poll() is None, running.output()
            assert time.monotonic() < deadline, running.output()
            time.sleep(1)
        time.sleep(0.5)
        url = re.search(r"playback URL: (\S+\.m3u8)", running.output())
        assert url is not None, running.output()
        probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                                "stream=nb_read_frames", "-of", "csv=p=0", url.group(1)],
                               capture_output=True, text=True, timeout=180)
        assert probe.returncode == 0, probe.stderr
        assert int(probe.stdout.split()[0]) == 600  # 20 s at 30 fps

        # going live on what `make run` started: a live stream through the API, Debian ffmpeg publishing to the
        # RTMP ingest the runner started, the live ladder on the local Ray, the stream played through the edge
        stream = running.client.post(f"{running.url}/video/v1/live-streams",
                                     json={"playback_policies": ["public"]}, timeout=30).json()["data"]
        # the demo job's kept encoder actors hold this 2-CPU node's CPUs (cluster.keep_workers_seconds, 30 s): the
        # live transcoder, started by the ingest actor, releases them (live.reclaim_encoders_seconds) rather than
        # wait, so the stream is playable long before this publisher ends
        publisher = subprocess.Popen(publisher_command(running.rtmp_port, stream["stream_key"], seconds=30,
                                                       app="app", size="426x240"), stderr=subprocess.PIPE, text=True)
        try:
            live_url = f"{running.url}/{stream['playback_ids'][0]['id']}.m3u8"
            deadline = time.monotonic() + 120
            while requests.get(live_url, timeout=10).status_code != 200:
                assert publisher.poll() is None, publisher.stderr.read() if publisher.stderr else ""
                assert time.monotonic() < deadline, running.output()
                time.sleep(0.5)
            live = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
                                   live_url], capture_output=True, text=True, timeout=60)
            assert live.returncode == 0 and "video" in live.stdout, live.stderr
        finally:
            publisher.kill()
            publisher.wait()

        # its edge dies (the child `kinoray up` started): `kinoray up` exits non-zero, so a supervisor restarts it
        (edge,) = [pid for pid in _children(running.process.pid) if b"kinoray.cli\x00edge" in _cmdline(pid)]
        os.killpg(os.getpgid(edge), signal.SIGKILL)
        assert running.process.wait(timeout=120) == 1, running.output()
        assert "the delivery edge exited" in running.output()
    finally:
        running.stop()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _descendants(root: int, skip: set[int]) -> list[int]:
    """Every process under ``root`` (children first), leaving out the subtrees of ``skip``."""
    found, queue = [], [pid for pid in _children(root) if pid not in skip]
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(child for child in _children(pid) if child not in skip)
    return found


def _children(parent: int) -> list[int]:
    """Direct children of ``parent`` (from /proc: the processes our own `kinoray up` started)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    children.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return children


def _failed_up(command: list[str], api_port: int, data_dir: Path, **env: str) -> dict:
    """Run ``kinoray up`` that must fail to start; its typed error (the CLI's one JSON line on stderr, among
    whatever Ray prints)."""
    done = subprocess.run(
        [*command, "up", "--port", str(free_port()), "--api-port", str(api_port), "--rtmp-port", str(free_port()),
         "--data-dir", str(data_dir)], env={**os.environ, "KINORAY_DATA_DIR": str(data_dir), **env},
        capture_output=True, timeout=180, check=False, start_new_session=True)
    assert done.returncode != 0
    lines = [line for line in done.stderr.decode().splitlines() if line.startswith('{"error"')]
    assert len(lines) == 1, done.stderr.decode()[-3000:]
    return dict(json.loads(lines[0])["error"])


def test_a_given_port_in_use_is_a_configuration_error(tmp_path: Path) -> None:
    """A port the user gave (here `--api-port`) that something else holds: `kinoray up` exits non-zero at once
    with a typed error naming the port and the option, instead of retrying or an internal error."""
    with socket.create_server(("0.0.0.0", 0)) as held:  # noqa: S104 - as a process on the node would
        port = int(held.getsockname()[1])
        error = _failed_up([sys.executable, "-m", "kinoray.cli"], port, tmp_path / "data")
    assert error["type"] == "configuration_error", error
    assert f"{port} (--api-port" in error["messages"][0], error
    assert _configs_naming([port]) == []


def test_picked_ports_taken_at_every_start_are_a_typed_cluster_error(tmp_path: Path) -> None:
    """The ports picked for HAProxy are taken again at the last start allowed (here the only one): a typed
    `cluster_unavailable` naming them, and no HAProxy directory left behind."""
    held = [socket.create_server(("0.0.0.0", 0)) for _ in range(2)]  # noqa: S104 - as a node's process
    ports = [int(sock.getsockname()[1]) for sock in held]
    try:
        error = _failed_up([sys.executable, "-c", _FIRST_PICKS_TAKEN, ",".join(map(str, ports))], free_port(),
                           tmp_path / "data", KINORAY_TEST_INGRESS_ATTEMPTS="1")
    finally:
        for sock in held:
            sock.close()
    assert error["type"] == "cluster_unavailable", error
    assert all(str(port) in error["messages"][0] for port in ports) and "each of 1 start(s)" in error["messages"][0], error
    assert _configs_naming(ports) == []
