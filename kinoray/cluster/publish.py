"""Stitch a finished asset's chunks and publish the package (local directory or object-storage prefix)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from kinoray.media.audio import AudioResult
from kinoray.media.package import Track
from kinoray.media.pipeline import AssetPlan, package_asset, publish_directory
from kinoray.media.transcode import ChunkResult
from kinoray.settings import Settings
from kinoray.store import ObjectStore, is_local_url

__all__ = ["MANIFESTS_LAST", "package_and_publish"]

#: Published after every other file, in this order, so a manifest never points at a missing file.
MANIFESTS_LAST = ("index.m3u8", "manifest.mpd", "master.m3u8")


def package_and_publish(
    asset: AssetPlan,
    chunk_results: list[ChunkResult],
    audio: AudioResult | None,
    *,
    output: str,
    work: ObjectStore,
    settings: Settings,
    tag: str,
    before_publish: Callable[[], None] | None = None,
) -> tuple[list[Track], Track | None]:
    """Package the chunk outputs (keys in ``work``) into a staging area, then publish it to ``output``.

    A local ``output`` directory is swapped in by one rename (a previous version is replaced whole); a remote
    prefix gets every segment before any playlist. ``before_publish`` runs between the two (cancellation).
    """
    scratch = Path(tempfile.mkdtemp(prefix=f"kinoray-package-{tag[:8]}-"))
    try:
        chunk_results, audio = _localise(work, scratch / "work", chunk_results, audio)
        if is_local_url(output):
            out_dir = Path(output.removeprefix("file://")).resolve()
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            staging = out_dir.parent / f".{out_dir.name}.staging-{tag[:12]}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            try:
                packaged = package_asset(asset, chunk_results, audio, staging)
                if before_publish is not None:
                    before_publish()
                publish_directory(staging, out_dir)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        else:
            staging = scratch / "out"
            staging.mkdir()
            packaged = package_asset(asset, chunk_results, audio, staging)
            if before_publish is not None:
                before_publish()
            ObjectStore(output, settings.storage).publish_tree(staging, last=MANIFESTS_LAST)
        return packaged
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _localise(work: ObjectStore, local: Path, chunk_results: list[ChunkResult],
              audio: AudioResult | None) -> tuple[list[ChunkResult], AudioResult | None]:
    """Point the results at local packet stores (downloaded unless the work store is a local directory)."""

    def fetch(key: str) -> str:
        if work.is_local:
            return work.path(key)
        for suffix in (".bin", ".json"):
            work.get_file(key + suffix, local / (key + suffix))
        return str(local / key)

    chunk_results = [replace(r, renditions=tuple(replace(x, store=fetch(x.store)) for x in r.renditions))
                     for r in chunk_results]
    return chunk_results, (replace(audio, store=fetch(audio.store)) if audio is not None else None)
