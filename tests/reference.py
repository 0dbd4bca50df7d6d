"""What a distributed run is compared with: the in-process engine's output for the same plan, file by file."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from kinoray.encoders.determinism import DETERMINISTIC_HEAP
from kinoray.media.pipeline import TranscodeOptions

__all__ = ["engine_digest", "tree_digest"]


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def engine_digest(source: Path, options: TranscodeOptions, out: Path) -> dict[str, str]:
    """The in-process engine's output (no Ray at all) for ``options``, made in a process started with the same
    deterministic-heap setting as the workers; its :func:`tree_digest`."""
    code = ("import sys; from kinoray.media.pipeline import TranscodeOptions, transcode_file; "
            "from kinoray.settings import InputLimits; "
            f"transcode_file(sys.argv[1], sys.argv[2], {options!r})")
    env = {**os.environ, **DETERMINISTIC_HEAP}
    subprocess.run([sys.executable, "-c", code, str(source), str(out)], check=True, env=env, timeout=300)
    return tree_digest(out)
