"""The browser tests' watchdog (tests/browser.py, armed by tests/conftest.py): a test whose browser never answers
fails with its stacks in the log, the browser is killed, and the next test runs — the suite is not held until
CI's wall-clock limit, as it was when pytest-timeout's alarm landed inside a Playwright call."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.browser import require_chromium

WEDGED = '''
from tests.browser import chromium

def test_wedged():
    with chromium() as browser:
        page = browser.new_page()
        page.wait_for_function("false", timeout=0)  # never true, no Playwright timeout

def test_after():
    assert True
'''


def test_a_wedged_browser_fails_its_test_and_the_suite_goes_on(tmp_path: Path) -> None:
    require_chromium()
    (tmp_path / "test_wedged.py").write_text(WEDGED)
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_protocol  # noqa: F401\n")
    root = Path(__file__).resolve().parent.parent
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(root),
                          "-c", str(root / "pyproject.toml"), str(tmp_path / "test_wedged.py")],
                         cwd=root, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "KINORAY_TEST_BROWSER_DEADLINE": "8"})
    elapsed = time.monotonic() - started
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout, run.stdout
    assert "TargetClosedError" in run.stdout or "closed" in run.stdout, run.stdout
    log = run.stdout + run.stderr  # the stacks are in the failed test's captured stderr
    assert "still running after 8 s with Chromium open" in log, log
    assert "most recent call first" in log and "playwright" in log  # every thread's stack, Playwright's loop's
    assert elapsed < 120, elapsed
