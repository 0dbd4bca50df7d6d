"""Structured logging, and routing of native encoder chatter into it.

FFmpeg (and x264, which logs through FFmpeg) reaches Python logging through PyAV's callback under the
``libav`` logger. x265 and SVT-AV1 write straight to file descriptor 2 from C; while
:func:`native_output_to_logging` is active those lines are read from a pipe and re-emitted through the
``kinoray.native.x265`` / ``kinoray.native.svtav1`` loggers at the level they announce.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import av.logging

__all__ = ["JsonFormatter", "native_output_to_logging", "setup_logging"]

_original_stderr: TextIO | None = None


def _stderr() -> TextIO:
    """A stream on the process's real stderr that survives :func:`native_output_to_logging`."""
    global _original_stderr
    if _original_stderr is None:
        _original_stderr = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    return _original_stderr


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra={...}`` fields."""

    _reserved = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._reserved and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def setup_logging(level: str = "INFO", native_level: str = "WARNING", json_lines: bool = False) -> None:
    """Configure the ``kinoray`` loggers (and FFmpeg's) to write to the real stderr.

    ``native_level`` applies to FFmpeg/x264 (``libav``) and x265/SVT-AV1 (``kinoray.native``) lines; their
    ``info`` banners are noise for a user, so the default shows warnings and above.
    """
    handler = logging.StreamHandler(_stderr())
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    for name, lvl in (("kinoray", level), ("libav", native_level), ("kinoray.native", native_level)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(lvl)
        logger.propagate = False
    av.logging.set_level(av.logging.VERBOSE)


_LINE = re.compile(r"^(?P<tool>x265|Svt|SVT)\s*\[(?P<level>\w+)\]\s*:?\s*(?P<msg>.*)$")
_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "warn": logging.WARNING, "info": logging.INFO,
           "debug": logging.DEBUG, "full": logging.DEBUG}
_TOOLS = {"x265": "x265", "svt": "svtav1"}
_MAX_LINES_PER_SECOND = 2000


def _emit_native_line(line: str) -> None:
    match = _LINE.match(line)
    if match:
        tool = _TOOLS.get(match["tool"].lower(), "other")
        level = _LEVELS.get(match["level"].lower(), logging.INFO)
        message = match["msg"].strip()
    else:
        tool, level, message = "other", logging.INFO, line
    logging.getLogger(f"kinoray.native.{tool}").log(level, "%s", message)


class _Capture:
    """Process-wide, reference-counted redirection of fd 2 into a reader thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved_fd = -1
        self.thread: threading.Thread | None = None
        self.second = 0
        self.emitted = 0

    def start(self) -> None:
        with self.lock:
            self.depth += 1
            if self.depth > 1:
                return
            _stderr()
            sys.stderr.flush()
            read_fd, write_fd = os.pipe()
            self.saved_fd = os.dup(2)
            os.dup2(write_fd, 2)
            os.close(write_fd)
            self.thread = threading.Thread(target=self._pump, args=(read_fd,), name="native-log", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth > 0:
                return
            os.dup2(self.saved_fd, 2)  # closes the pipe's last writer, so the pump sees EOF
            os.close(self.saved_fd)
            thread, self.thread = self.thread, None
        if thread is not None:
            thread.join(timeout=5)

    def _pump(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as pipe:
            for raw in pipe:
                line = raw.rstrip("\r\n")
                if not line.strip():
                    continue
                # A foreign handler that still writes to fd 2 would feed our own records back to us: pass
                # such echoes (they carry our logger name), and any runaway flood, straight to real stderr.
                now = int(time.monotonic())
                if now != self.second:
                    self.second, self.emitted = now, 0
                self.emitted += 1
                if "kinoray.native" in line or self.emitted > _MAX_LINES_PER_SECOND:
                    _stderr().write(raw)
                    continue
                _emit_native_line(line)


_capture = _Capture()


@contextmanager
def native_output_to_logging() -> Iterator[None]:
    """Route whatever native code writes to stderr (x265, SVT-AV1 banners) into Python logging."""
    _capture.start()
    try:
        yield
    finally:
        _capture.stop()
