"""The check every vendored npm bundle (the player's hls.js/dash.js, the dashboard's uPlot) passes: its files are
what its lockfile pins, byte for byte."""

from __future__ import annotations

import hashlib
import json
import re

from kinoray.player.assets import StaticBundle


def assert_vendored_from_the_lock(bundle: StaticBundle, make_target: str) -> dict[str, dict[str, str]]:
    """``bundle``'s ``package.json`` pins every dependency exactly and ``package-lock.json`` agrees; each vendored
    file is the pinned version and hashes to what ``build.mjs`` recorded (and, where ``node_modules`` is
    installed, equals npm's file); every file in ``static/`` is on the allow-list. Returns ``vendor.json``'s
    files, for the caller's own checks."""
    package_dir = bundle.directory.parent
    lock = json.loads((package_dir / "package-lock.json").read_text())
    manifest = json.loads((package_dir / "package.json").read_text())
    for package, pinned in manifest["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), f"{package} must be pinned exactly, not {pinned!r}"
        assert lock["packages"][f"node_modules/{package}"]["version"] == pinned
        assert lock["packages"][""]["dependencies"][package] == pinned
    files = bundle.vendored
    for name, record in files.items():
        shipped = (bundle.directory / name).read_bytes()
        assert record["version"] == manifest["dependencies"][record["package"]], name
        assert hashlib.sha256(shipped).hexdigest() == record["sha256"], \
            f"static/{name} differs from what build.mjs recorded: run make {make_target}"
        installed = package_dir / "node_modules" / record["package"] / record["path"]
        if installed.exists():  # after `make <target>`: byte for byte what npm installed from the lockfile
            assert installed.read_bytes() == shipped, name
    on_disk = {path.name for path in bundle.directory.iterdir()}
    assert on_disk == set(bundle.names) | {"vendor.json"}, "every file in static/ is on the allow-list"
    assert set(bundle.own) <= on_disk
    return files
