"""CPU per management-API read, counted on the server's own processes: ``api_latency.py``'s reads
(``GET /video/v1/assets/{id}`` and ``GET /video/v1/assets`` in turn) sent one at a time on a keep-alive connection.

    .venv/bin/python benchmarks/api_cpu.py                                # the app under uvicorn, this checkout
    .venv/bin/python benchmarks/api_cpu.py --up                           # the app on Serve (`kinoray up`)
    .venv/bin/python benchmarks/api_cpu.py --code /work/main,. --rounds 4 # two checkouts, rounds alternating
    .venv/bin/python benchmarks/api_cpu.py --py-spy /tmp/api.txt          # py-spy's samples of the server

Without ``--up`` the server is the FastAPI app of :func:`kinoray.serve.api.build_api` under uvicorn (uvloop,
httptools: what a Serve replica runs behind HAProxy, without Serve's wrapper) in a child process on a fresh
SQLite database; the CPU counted is that process's. With ``--up`` it is a ``kinoray up`` of its own
(``_harness.start_server``) read on Serve's port, and the CPU is counted per process of its tree (the API
replicas, HAProxy, the rest) and per thread of the replicas (their event loop, anyio's worker threads): what
Serve adds around the app shows beside the plain runs. The client runs in this process, never counted.

``--assets`` assets are made first, each with a public playback id; ``--reads`` picks the paths (``healthz``: the
app without authentication or database). ``--code`` serves each listed checkout's kinoray (default: this one),
all started before the first round, the rounds alternating between them: on a shared machine compare code only
this way. CPU is user + system time from ``/proc`` over the measured requests (after ``--warmup`` of them).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _harness import ROOT, cmdline, free_port, sample, start_server, stop_server, tree
from rich.console import Console

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READS = {"asset": "/video/v1/assets/{id}", "list": "/video/v1/assets", "healthz": "/healthz"}


def serve(port: int, data_dir: Path, assets: int) -> None:
    """The child without ``--up``: a platform on a fresh database, ``assets`` assets and a token (printed as
    JSON on stdout), then uvicorn until killed."""
    import uvicorn

    from kinoray.control import assets as control_assets
    from kinoray.control.assets import AssetCreate
    from kinoray.control.auth import create_token
    from kinoray.control.platform import Platform
    from kinoray.serve.api import build_api
    from kinoray.serve.deps import set_platform
    from kinoray.settings import Settings

    settings = Settings(data_dir=data_dir, environment="test", log_level="WARNING",
                        api={"rate_limit_per_second": 1e6, "rate_limit_burst": 1_000_000,
                             "allow_private_inputs": True})
    platform = Platform.from_settings(settings)
    ids = []
    with platform.db.session() as session:
        token, secret = create_token(session, name="api_cpu")
        for i in range(assets):
            body = AssetCreate.model_validate({"inputs": [{"url": f"http://127.0.0.1:9/in-{i}.mp4"}],
                                               "playback_policies": ["public"]})
            ids.append(control_assets.create_asset_from_request(session, settings, body).id)
    set_platform(platform)
    print(json.dumps({"token": [token.id, secret], "assets": ids}), flush=True)
    uvicorn.run(build_api(), host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off",
                loop="uvloop", http="httptools")


def _stat_cpu(path: Path) -> tuple[str, float]:
    head, fields = path.read_text().rsplit(")", 1)
    parts = fields.split()
    return head.split("(", 1)[1], (int(parts[11]) + int(parts[12])) / CLOCK_TICKS  # comm; utime + stime


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each live thread of ``pid``, by its name as ``py-spy dump`` shows it when Python named it
    (``AsyncIO Thread: default``, ``AnyIO worker thread``), else its kernel name; threads of one name summed."""
    names: dict[int, str] = {}
    try:
        dump = subprocess.run([str(Path(sys.executable).with_name("py-spy")), "dump", "--pid", str(pid)],
                              capture_output=True, text=True, timeout=30).stdout
        for line in dump.splitlines():  # Thread 7021 (idle): "AsyncIO Thread: default"
            if line.startswith("Thread ") and '"' in line:
                names[int(line.split()[1], 0)] = line.split('"')[1]
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm, cpu = _stat_cpu(task / "stat")
        except OSError:
            continue
        name = names.get(int(task.name), comm)
        out[name] = out.get(name, 0.0) + cpu
    return out


def drive(connection: http.client.HTTPConnection, paths: list[str], auth: str, count: int) -> None:
    for i in range(count):
        connection.request("GET", paths[i % len(paths)], headers={"Authorization": auth})
        answer = connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise SystemExit(f"{paths[i % len(paths)]}: {answer.status} {body[:200]!r}")


def _connect(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=10)


class Server:
    """One checkout's server, started; :meth:`measure` one round of reads."""

    code: str
    url: str
    connection: http.client.HTTPConnection
    paths: list[str]
    auth: str

    def counted(self) -> dict[int, str]:
        """The processes whose CPU counts, by kind."""
        raise NotImplementedError

    def measure(self, requests: int) -> dict[str, Any]:
        kinds = self.counted()
        replicas = [pid for pid, kind in kinds.items() if kind == "replica"]
        self.connection.close()  # idle while other servers were read: the server may have closed it
        self.connection = _connect(self.url)
        drive(self.connection, self.paths, self.auth, 20)
        threads = {pid: thread_cpu(pid) for pid in replicas}
        before, wall = sample(kinds), time.perf_counter()
        drive(self.connection, self.paths, self.auth, requests)
        after, wall = sample(kinds), time.perf_counter() - wall
        by_kind: dict[str, float] = {}
        for pid, (cpu, _) in after.items():
            by_kind[kinds[pid]] = by_kind.get(kinds[pid], 0.0) + cpu - before.get(pid, (0.0, 0))[0]
        by_thread: dict[str, float] = {}
        for pid, start in threads.items():
            for name, cpu in thread_cpu(pid).items():
                by_thread[name] = by_thread.get(name, 0.0) + cpu - start.get(name, 0.0)
        per = 1000 / requests
        result: dict[str, Any] = {"code": self.code, "cpu_ms_per_request": {
            kind: round(cpu * per, 3) for kind, cpu in sorted(by_kind.items())}}
        if by_thread:  # threads that ended during the round are counted in their process only
            result["replica_threads_ms_per_request"] = {
                name: round(cpu * per, 3) for name, cpu in sorted(by_thread.items(), key=lambda item: -item[1])
                if cpu * per >= 0.01}
        result["wall_ms_per_request"] = round(wall * per, 3)
        return result


class Uvicorn(Server):
    def __init__(self, code: str, temp: Path, args: argparse.Namespace) -> None:
        self.code = code
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("KINORAY_")}
        env["PYTHONPATH"] = code
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(temp),
                                         "--assets", str(args.assets)],
                                        env=env, stdout=subprocess.PIPE, cwd=temp)
        assert self.process.stdout is not None
        made = json.loads(self.process.stdout.readline())
        self.auth = "Basic " + base64.b64encode(":".join(made["token"]).encode()).decode()
        self.paths = [READS[name].format(id=made["assets"][0]) for name in args.reads.split(",")]
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                self.connection = _connect(self.url)
                drive(self.connection, self.paths, self.auth, 1)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def counted(self) -> dict[int, str]:
        return {self.process.pid: "server"}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class Up(Server):
    def __init__(self, code: str, temp: Path, args: argparse.Namespace) -> None:
        self.code = code
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = code
        try:
            self.target = start_server(temp, Console(stderr=True))
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH")
            else:
                os.environ["PYTHONPATH"] = saved
        assert self.target.api_url is not None and self.target.process is not None
        self.auth = "Basic " + base64.b64encode(":".join(self.target.auth).encode()).decode()
        ids = []
        for i in range(args.assets):
            request = urllib.request.Request(
                f"{self.target.api_url}/video/v1/assets", method="POST",
                headers={"Authorization": self.auth, "Content-Type": "application/json"},
                data=json.dumps({"inputs": [{"url": f"http://127.0.0.1:9/in-{i}.mp4"}],
                                 "playback_policies": ["public"]}).encode())
            with urllib.request.urlopen(request, timeout=30) as answer:
                ids.append(json.loads(answer.read())["data"]["id"])
        self.paths = [READS[name].format(id=ids[0]) for name in args.reads.split(",")]
        self.url = self.target.api_url
        self.connection = _connect(self.url)

    def counted(self) -> dict[int, str]:
        assert self.target.process is not None
        kinds = {}
        for pid in tree(self.target.process.pid):
            line = cmdline(pid)
            kinds[pid] = ("replica" if "kinoray-api" in line and "Replica" in line else
                          "haproxy" if "haproxy" in line else "edge" if "kinoray.cli edge" in line else "other")
        return kinds

    def stop(self) -> None:
        stop_server(self.target.process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per round")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1, help="rounds per checkout")
    parser.add_argument("--assets", type=int, default=3)
    parser.add_argument("--reads", default="asset,list",
                        help=f"the paths read in turn, of {', '.join(READS)} (healthz: the app without auth or DB)")
    parser.add_argument("--code", default=str(ROOT),
                        help="checkouts whose kinoray to serve, comma-separated (default: this one)")
    parser.add_argument("--up", action="store_true", help="measure a `kinoray up` of each (Serve) instead")
    parser.add_argument("--py-spy", dest="py_spy",
                        help="py-spy the (first checkout's first replica or) server during its rounds, every "
                             "thread, collapsed stacks written here")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DATA_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]), args.assets)
        return 0
    codes = [str(Path(code).resolve()) for code in args.code.split(",")]
    kind = Up if args.up else Uvicorn
    with ExitStack() as stack:
        servers = []
        for code in codes:
            temp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kinoray-api-cpu-")))
            server = kind(code, temp, args)
            stack.callback(server.stop)
            drive(server.connection, server.paths, server.auth, args.warmup)
            servers.append(server)
        spy = None
        if args.py_spy:
            first = servers[0]
            pid = next(pid for pid, what in first.counted().items() if what in ("replica", "server"))
            spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
                                    "--rate", "997", "--format", "raw", "--nonblocking", "--output", args.py_spy],
                                   stdout=subprocess.DEVNULL)
            time.sleep(1.0)
        rounds = []
        for _ in range(args.rounds):
            for server in servers:
                rounds.append(server.measure(args.requests))
                print(json.dumps(rounds[-1]), flush=True)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        print(json.dumps({"up": args.up, "reads": args.reads, "requests": args.requests, "loadavg": os.getloadavg(),
                          "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
