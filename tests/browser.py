"""Headless Debian Chromium for the browser tests, driven by Playwright — and bounded, so a wedged browser fails
its test instead of hanging the suite.

Why the bound lives here and not in pytest-timeout: pytest-timeout's signal method raises inside whatever
Python runs when the alarm fires; raised inside a Playwright sync call, it leaves Playwright's connection
wedged, and the next call (the ``finally`` that closes the page or the browser) waits forever — one slow
browser test then holds CI to its wall-clock limit. Killing the browser instead makes every pending Playwright
call raise ``TargetClosedError`` at once and every later one fail fast, so the test fails with its traceback and
the suite goes on. :func:`kill_wedged_browsers` does that; ``tests/conftest.py`` calls it for any test still
running :data:`BROWSER_DEADLINE` seconds after it started (well before pytest-timeout's 600 s).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
#: The flags every test browser starts with: headless as root, no GPU, no background calls to Google (this
#: machine's closed network refuses them), and video that plays without a click.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required"]
#: Seconds one test (setup, call and teardown) may hold a browser before the watchdog kills it
#: (``KINORAY_TEST_BROWSER_DEADLINE`` sets it, for the test that proves the watchdog works).
BROWSER_DEADLINE = float(os.environ.get("KINORAY_TEST_BROWSER_DEADLINE", "420"))


def require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")


@contextmanager
def chromium(*extra_args: str) -> Iterator[Any]:
    """A Playwright ``Browser`` on Debian's Chromium with :data:`CHROMIUM_ARGS` and ``extra_args``; skips the test
    where Chromium is not installed."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args],
                                             timeout=120_000)
        try:
            yield browser
        finally:
            browser.close()


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def own_browsers() -> list[int]:
    """Pids of the Chromium browser processes (not their renderers and helpers, which die with them) this test
    process started through Playwright's driver: only descendants of this process are ever looked at."""
    children = _children()
    found: list[int] = []
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        # Chromium's children rewrite their command line into one string; only the browser's has no --type=
        program = command.split(b"\0", 1)[0].split(b" ", 1)[0]
        if program.endswith(b"/chromium") and b"--type=" not in command:
            found.append(pid)
    return found


def kill_wedged_browsers(test: str) -> list[int]:
    """Kill the browsers this process started (see the module's docstring), after writing every thread's stack
    to stderr so the log shows where the test was stuck. Returns the pids killed."""
    pids = own_browsers()
    if not pids:
        return []
    sys.stderr.write(f"\n{test}: still running after {BROWSER_DEADLINE:.0f} s with Chromium open "
                     f"(pids {pids}); stacks, then the browser is killed\n")
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


class BrowserTab:
    """One page in a fresh browser context, recording uncaught page errors, console errors, every 4xx/5xx answer
    and every URL requested; :meth:`wait` polls an expression and fails with what was recorded (and
    :meth:`state`, which a test module may add to)."""

    def __init__(self, browser: Any, width: int = 960, height: int = 540) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.bad_answers: list[tuple[int, str]] = []
        self.urls: list[str] = []
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        self.page.on("request", lambda request: self.urls.append(request.url))
        self.page.on("response", lambda r: r.status >= 400 and self.bad_answers.append((r.status, r.url)))

    def eval(self, expression: str, argument: Any = None) -> Any:
        return self.page.evaluate(expression, argument)

    def state(self) -> str:
        """What a timed-out :meth:`wait` reports beside the errors (subclasses add the page's own state)."""
        return ""

    def wait(self, expression: str, argument: Any = None, timeout: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.page.evaluate(expression, argument)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or expression}; {self.state()}errors: "
                                     f"{self.page_errors} {self.console_errors}; answers: {self.bad_answers}")
            time.sleep(0.05)

    def close(self) -> None:
        self.context.close()
