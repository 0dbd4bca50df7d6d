"""Mux's JavaScript SDKs and elements as test clients: ``tests/js`` pins them (package.json + package-lock.json)
and :func:`js_clients` installs them from the lockfile on first use (``npm ci``, the npm registry), so a fresh
clone's ``make test`` gets them and nothing is vendored. Tests run Node scripts from that folder with
:func:`run_node`, or serve the packages' browser files to Chromium from ``node_modules``."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import filelock

__all__ = ["JS_DIR", "PageServer", "js_clients", "run_node"]

JS_DIR = Path(__file__).parent / "js"


def js_clients() -> Path:
    """``tests/js/node_modules``, installed from the lockfile unless what is there matches it already. Safe when
    several test processes call it at once (a file lock)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("node and npm are needed for the tests that run Mux's JavaScript SDKs")
    modules = JS_DIR / "node_modules"
    lock = JS_DIR / "package-lock.json"
    stamp = modules / ".kinoray-lock"
    with filelock.FileLock(str(JS_DIR / ".install.lock")):
        if not stamp.exists() or stamp.read_text() != lock.read_text():
            subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True,
                           capture_output=True, timeout=600)
            stamp.write_text(lock.read_text())
    return modules


def run_node(script: str, config: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Run ``tests/js/<script>`` with ``config`` as JSON in ``KINORAY_TEST_CONFIG``; the JSON it prints."""
    js_clients()
    done = subprocess.run(["node", script], cwd=JS_DIR, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "KINORAY_TEST_CONFIG": json.dumps(config)})
    if done.returncode != 0:
        raise AssertionError(f"node {script} exited {done.returncode}:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


class PageServer(http.server.ThreadingHTTPServer):
    """Test pages for Chromium on ``http://127.0.0.1`` (a local origin: Chromium lets local pages reach this
    machine's other ports, not public ones): the files given (URL path → file, e.g. a package's browser bundle)
    and each page :meth:`put` here. Stop with ``shutdown()`` and ``server_close()``."""

    daemon_threads = True

    def __init__(self, files: dict[str, Path]) -> None:
        self.files: dict[str, tuple[bytes, str]] = {
            path: (file.read_bytes(), "text/javascript" if file.suffix in (".js", ".mjs") else "application/octet-stream")
            for path, file in files.items()}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, kind = server.files.get(self.path, (b"not found", "text/plain"))
                self.send_response(200 if self.path in server.files else 404)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, name="test-pages", daemon=True).start()

    def put(self, html: str) -> str:
        """Serve ``html`` at a new path; its URL."""
        path = f"/page{len(self.files)}"
        self.files[path] = (html.encode(), "text/html")
        return f"http://127.0.0.1:{self.server_address[1]}{path}"
