"""Running the edge: :func:`serve` (``kinoray edge``: Granian, one worker process per CPU, SO_REUSEPORT
sharing one listening port, failed workers respawned) and :class:`EdgeProcess` (the same command as a child
process in its own process group, for ``kinoray up`` and the tests, stopped by that group only).

Why Granian: docs/ARCHITECTURE.md ("Delivery edge") has the measurement; in short, its ASGI ``pathsend``
sends segment files from Rust, which no Python server on this list matched.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from kinoray.errors import KinorayError
from kinoray.priority import confine, yield_cpu
from kinoray.settings import EdgeSettings

__all__ = ["EdgeProcess", "serve", "wait_ok", "worker_count"]

log = logging.getLogger(__name__)


def worker_count(settings: EdgeSettings) -> int:
    """``settings.workers``, or one per CPU this process may use (after :func:`serve` confined it to
    ``settings.cpus``)."""
    return settings.workers or len(os.sched_getaffinity(0))


def serve(settings: EdgeSettings, *, log_level: str = "warning") -> None:
    """Serve the edge on ``settings.host:port`` until SIGINT/SIGTERM (blocking).

    Workers are started by ``spawn``, not ``fork``: Granian's main process runs threads (its Rust IPC
    receivers when metrics are on, a watcher per worker, always when it respawns one), and a worker forked
    while one of them held a lock hung for good with its listener open (its connections accepted, never
    answered): 2 starts in 80 with metrics on, measured; 0 in 80 spawned."""
    import multiprocessing

    from granian.constants import Interfaces, RuntimeModes
    from granian.server import Server

    multiprocessing.set_start_method("spawn", force=True)  # this process is the edge's alone
    confine(settings.cpus)  # the worker processes Granian starts inherit both
    yield_cpu(settings.nice)
    Server(
        "kinoray.edge.app:create_app", factory=True, interface=Interfaces.ASGI,
        address=settings.host, port=settings.port, workers=worker_count(settings),
        runtime_mode=RuntimeModes(settings.runtime_mode),
        ssl_cert=settings.tls_cert, ssl_key=settings.tls_key,
        respawn_failed_workers=True, workers_kill_timeout=10, log_level=log_level,  # type: ignore[arg-type]
        log_access=False, websockets=True,  # live chat rooms (kinoray.serve.routes.chat)
        metrics_enabled=settings.metrics_port is not None, metrics_address=settings.host,
        metrics_port=settings.metrics_port or 9090, metrics_scrape_interval=settings.metrics_scrape_seconds,
    ).serve()


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, even by SIGKILL (Linux), so a killed
    ``kinoray up`` leaves no edge holding its port."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def wait_ok(url: str, timeout: float, *, what: str, failed: Callable[[], str | None] = lambda: None) -> None:
    """Poll ``url`` until it answers 200. Raises ``KinorayError`` when ``failed()`` names a reason to stop
    waiting, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        reason = failed()
        if reason is not None:
            raise KinorayError(reason)
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - our own URL
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise KinorayError(f"{what} did not answer on {url} within {timeout:.0f} s")
        time.sleep(0.1)


class EdgeProcess:
    """``kinoray edge`` as a child process in a new session (its own process group): :meth:`stop` signals
    that group and nothing else. The child is sent SIGTERM if this process dies first."""

    def __init__(self, env: Mapping[str, str], *, log_path: Path | None = None) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EdgeProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - kept for the child
        try:
            self.process = subprocess.Popen([sys.executable, "-m", "kinoray.cli", "edge"], env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, url: str, timeout: float = 60.0, *, workers: int = 1) -> None:
        """Wait until ``url``/edge/healthz answers 200, from ``workers`` distinct worker processes (each
        request on a new connection, which the kernel hands to any worker); raises ``KinorayError`` if the
        process exits or the time runs out (with the log's last lines)."""

        def exited() -> str | None:
            if self.alive:
                return None
            return f"the edge exited with {self.process.returncode if self.process else None}: {self._log_tail()}"

        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while len(seen) < workers:
            reason = exited()
            if reason is not None:
                raise KinorayError(reason)
            try:  # urllib raises on any answer but a 2xx
                with urllib.request.urlopen(f"{url}/edge/healthz", timeout=5) as answer:  # noqa: S310 - ours
                    seen.add(json.loads(answer.read())["worker"])
            except (OSError, ValueError, KeyError):
                pass
            if len(seen) < workers:
                if time.monotonic() > deadline:
                    raise KinorayError(f"{len(seen)} of the edge's {workers} worker(s) answered on {url} within "
                                       f"{timeout:.0f} s: {self._log_tail()}")
                time.sleep(0.05)

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-2000:]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the edge's process group (Granian stops its workers), SIGKILL after ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        group = self.process.pid  # the session leader's pid is the group id
        try:
            os.killpg(group, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("edge did not stop in time: killing its process group", extra={"pid": group})
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=5)
        except ProcessLookupError:
            pass
        try:  # a worker still in the group after its parent went: the group is ours alone
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
