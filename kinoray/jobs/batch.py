"""Ray job entrypoint: transcode every video of a manifest with Ray Data, and write a Parquet results table.

::

    python -m kinoray.jobs.batch --manifest s3://bucket/manifest.parquet --output s3://bucket/out/batch1

The manifest is CSV or Parquet with one row per video: ``input`` (path or URL, required), and optionally ``id``
(names the output folder; default ``video-<row>``), ``ladder`` ("1080,720,480"), ``codec``, ``encoder``,
``preset``, ``segment_seconds``, ``chunk_seconds``. The pipeline is one Ray Dataset:

1. ``map``: probe + keyframe index + chunk plan per video (a bad video becomes an error row here);
2. ``flat_map``: one row per work item (each chunk, and the audio) — small rows, the media stays in storage;
3. ``map_batches`` with :class:`ChunkEncoder`, an actor pool sized by ``concurrency`` (``num_gpus`` per actor
   on GPU clusters): each actor is an :class:`~kinoray.cluster.workers.EncoderWorker` and commits packet
   stores to the video's work prefix;
4. ``groupby("id").map_groups``: stitch + package + publish each video to ``OUTPUT/<id>/``;

then ``OUTPUT/results.parquet`` gets one row per manifest row: status, error, durations, frames, bytes,
encoder/decoders. One bad video errors its own row, never the batch.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import os
import pickle
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import ray

from kinoray.cli import parse_ladder
from kinoray.cluster import JobSpec, PoolLayout, ensure_ray, order_work
from kinoray.cluster.publish import package_and_publish
from kinoray.cluster.workers import EncoderWorker
from kinoray.encoders import select_encoder
from kinoray.errors import ConfigurationError, KinorayError
from kinoray.jobs.entry import FAILED, run_job
from kinoray.logs import setup_logging
from kinoray.media.pipeline import EncoderUsed, TranscodeOptions, prepare_asset, summarise_asset
from kinoray.media.transcode import ChunkResult
from kinoray.settings import Settings, get_settings
from kinoray.store import ObjectStore, join_url, open_url

__all__ = ["RESULT_SCHEMA", "ChunkEncoder", "read_manifest", "run_batch"]

log = logging.getLogger(__name__)

RESULT_SCHEMA = pa.schema([
    ("id", pa.string()), ("input", pa.string()), ("output", pa.string()), ("status", pa.string()),
    ("error_type", pa.string()), ("error", pa.string()), ("duration_seconds", pa.float64()),
    ("frames", pa.int64()), ("chunks", pa.int64()), ("renditions", pa.int64()), ("bytes", pa.int64()),
    ("encoder", pa.string()), ("fallback_from", pa.string()), ("decoders", pa.string()),
    ("plan_seconds", pa.float64()), ("encode_seconds", pa.float64()), ("package_seconds", pa.float64()),
    ("encode_cpu_seconds", pa.float64()), ("realtime_factor", pa.float64()),
])
_OPTION_COLUMNS = ("ladder", "codec", "encoder", "preset", "segment_seconds", "chunk_seconds")


def read_manifest(url: str, defaults: TranscodeOptions) -> list[dict[str, Any]]:
    """Manifest rows as ``{"id", "input", "options"}`` (options are ``defaults`` overridden per row).

    Raises:
        ConfigurationError: unreadable manifest, no ``input`` column, duplicate ids, a bad option value.
    """
    try:
        with open_url(url) as source:
            data = source.read()
        table = (pq.read_table(io.BytesIO(data)) if url.lower().endswith((".parquet", ".pq"))
                 else pa_csv.read_csv(io.BytesIO(data)))
    except (OSError, pa.ArrowException, KinorayError) as e:
        raise ConfigurationError(f"cannot read manifest {url}: {e}") from e
    if "input" not in table.column_names:
        raise ConfigurationError(f"manifest {url} has no 'input' column (columns: {table.column_names})")
    rows = []
    for number, record in enumerate(table.to_pylist()):
        video_id = str(record.get("id") or f"video-{number:05d}")
        if "/" in video_id or video_id.startswith("."):
            raise ConfigurationError(f"manifest row {number}: id {video_id!r} cannot name a folder")
        changes: dict[str, Any] = {}
        for column in _OPTION_COLUMNS:
            value = record.get(column)
            if value is None or value == "":
                continue
            try:
                if column == "ladder":
                    changes[column] = parse_ladder(str(value))
                elif column.endswith("_seconds"):
                    changes[column] = float(value)
                else:
                    changes[column] = str(value)
            except (ValueError, argparse.ArgumentTypeError) as e:
                raise ConfigurationError(f"manifest row {number}: bad {column} {value!r}: {e}") from e
        rows.append({"id": video_id, "input": str(record["input"]), "options": replace(defaults, **changes)})
    ids = [str(row["id"]) for row in rows]
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"manifest {url} repeats ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    return rows


def _error_fields(error: BaseException) -> dict[str, str]:
    kind = error.type if isinstance(error, KinorayError) else "internal_error"
    return {"error_type": kind, "error": f"{error}" if isinstance(error, KinorayError) else f"{type(error).__name__}: {error}"}


def _plan(row: dict[str, Any], *, encoders: dict[str, EncoderUsed], work_root: str,
          settings: Settings) -> dict[str, Any]:
    """Stage 1 (``map``): plan a manifest row; an error is recorded on the row."""
    options: TranscodeOptions = pickle.loads(row["options"])
    started = time.perf_counter()
    out = {"id": row["id"], "input": row["input"], "spec": b"", "error_type": "", "error": "", "plan_seconds": 0.0}
    try:
        asset = prepare_asset(row["input"], options)
        used = encoders[options.codec]
        spec = JobSpec(row["id"], asset, used.name or "", join_url(work_root, row["id"]), settings.storage)
        out["spec"] = pickle.dumps(spec)
    except Exception as e:  # noqa: BLE001 - recorded in this video's row
        out.update(_error_fields(e))
    out["plan_seconds"] = time.perf_counter() - started
    return out


def _expand(row: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Stage 2 (``flat_map``): one row per work item; a failed plan passes through as a single row."""
    base = {"id": row["id"], "input": row["input"], "plan_seconds": row["plan_seconds"], "result": b"",
            "error_type": row["error_type"], "error": row["error"], "encode_seconds": 0.0}
    if not row["spec"]:
        yield {**base, "spec": b"", "item": b""}
        return
    spec: JobSpec = pickle.loads(row["spec"])
    for item in order_work(spec.asset):
        yield {**base, "spec": row["spec"], "item": pickle.dumps(item)}


class ChunkEncoder:
    """Stage 3 (``map_batches`` actor): encode each work item of the batch with one EncoderWorker."""

    def __init__(self, kind: str = "cpu") -> None:
        self.worker = EncoderWorker(kind)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results, errors, kinds, seconds = [], [], [], []
        for spec_bytes, item_bytes, error_type, error in zip(batch["spec"], batch["item"], batch["error_type"],
                                                             batch["error"], strict=True):
            started = time.perf_counter()
            result, fields = b"", {"error_type": error_type, "error": error}
            if item_bytes:
                try:
                    result = pickle.dumps(self.worker.run(pickle.loads(spec_bytes), pickle.loads(item_bytes)))
                except Exception as e:  # noqa: BLE001 - errors this video only
                    fields = _error_fields(e)
            results.append(result)
            kinds.append(fields["error_type"])
            errors.append(fields["error"])
            seconds.append(time.perf_counter() - started)
        return {**batch, "result": np.array(results, dtype=object), "error_type": np.array(kinds, dtype=object),
                "error": np.array(errors, dtype=object), "encode_seconds": np.array(seconds)}


def _package(group: dict[str, np.ndarray], *, output: str, settings: Settings) -> dict[str, np.ndarray]:
    """Stage 4 (``groupby("id").map_groups``): stitch, package and publish one video; its result row."""
    row: dict[str, Any] = {name: None for name in RESULT_SCHEMA.names}
    row.update(id=str(group["id"][0]), input=str(group["input"][0]), plan_seconds=float(group["plan_seconds"][0]),
               encode_seconds=float(np.sum(group["encode_seconds"])))
    failed = [(t, e) for t, e in zip(group["error_type"], group["error"], strict=True) if t]
    spec: JobSpec | None = pickle.loads(group["spec"][0]) if group["spec"][0] else None
    work = ObjectStore(spec.work_url, settings.storage) if spec else None
    try:
        if failed:
            row.update(status="errored", error_type=str(failed[0][0]), error=str(failed[0][1]))
        else:
            assert spec is not None and work is not None
            row.update(_publish_video(spec, work, group, output, settings))
    except Exception as e:  # noqa: BLE001 - errors this video only
        row.update(status="errored", **_error_fields(e))
    finally:
        if work is not None:
            work.delete_prefix("")
    return {name: np.array([value], dtype=object) for name, value in row.items()}


def _publish_video(spec: JobSpec, work: ObjectStore, group: dict[str, np.ndarray], output: str,
                   settings: Settings) -> dict[str, Any]:
    results = [pickle.loads(r) for r in group["result"]]
    chunks = sorted((r for r in results if isinstance(r, ChunkResult)), key=lambda r: r.chunk_index)
    audio = next((r for r in results if not isinstance(r, ChunkResult)), None)
    started = time.perf_counter()
    output = join_url(output, spec.job_id)
    tracks, audio_track = package_and_publish(spec.asset, chunks, audio, output=output, work=work,
                                              settings=settings, tag=spec.job_id)
    package_seconds = time.perf_counter() - started
    encode_seconds = float(np.sum(group["encode_seconds"]))
    result = summarise_asset(spec.asset, EncoderUsed(spec.encoder or None), chunks, audio, tracks, audio_track,
                             output, encode_seconds + package_seconds, {"package": package_seconds})
    return {
        "output": output, "status": "ready", "duration_seconds": result.duration_seconds,
        "frames": result.frames, "chunks": result.chunks, "renditions": len(result.renditions),
        "bytes": sum(r.bytes for r in result.renditions), "encoder": result.encoder,
        "decoders": ",".join(result.decoders), "package_seconds": package_seconds,
        "encode_cpu_seconds": result.encode_cpu_seconds,
        "realtime_factor": result.duration_seconds / encode_seconds if encode_seconds else None,
    }


@ray.remote(num_cpus=1)
def _choose_encoders(codecs: list[str], requested: dict[str, str]) -> dict[str, EncoderUsed]:
    """Run where the encoders run (a worker with the pool's resources), so the choice is theirs."""
    return {codec: EncoderUsed.of(select_encoder(codec, requested[codec])) for codec in codecs}


def run_batch(manifest: str, output: str, *, defaults: TranscodeOptions | None = None,
              settings: Settings | None = None, concurrency: int | None = None) -> list[dict[str, Any]]:
    """Transcode every manifest row; returns the result rows (also written to ``OUTPUT/results.parquet``)."""
    settings = settings or get_settings()
    defaults = defaults or TranscodeOptions()
    rows = read_manifest(manifest, defaults)
    ensure_ray()
    layout = PoolLayout.from_cluster(settings.cluster)
    use_gpu = layout.gpu_workers > 0
    workers = concurrency or (layout.gpu_workers if use_gpu else layout.cpu_workers)
    gpu_fraction = 1.0 / settings.cluster.gpu_sessions_per_gpu
    requested = {row["options"].codec: row["options"].encoder for row in rows}
    probe = _choose_encoders.options(num_gpus=gpu_fraction if use_gpu else 0)
    encoders = ray.get(probe.remote(sorted(requested), requested))
    batch_id = uuid.uuid4().hex[:12]
    work_root = join_url(settings.storage.work_url or str(Path(settings.data_dir).resolve() / "work"),
                         "batches", batch_id)
    started = time.perf_counter()
    items = [{"id": row["id"], "input": row["input"], "options": pickle.dumps(row["options"])} for row in rows]
    encode_args: dict[str, Any] = {"concurrency": workers, "batch_size": 1, "num_cpus": 1,
                                   "fn_constructor_kwargs": {"kind": "gpu" if use_gpu else "cpu"}}
    if use_gpu:
        encode_args["num_gpus"] = gpu_fraction
    # Planning (probe + packet index) and packaging (remux) are I/O-bound and light: they run as zero-CPU
    # tasks so that the encoder actors can hold every CPU without starving them.
    dataset = (
        ray.data.from_items(items)
        .map(functools.partial(_plan, encoders=encoders, work_root=work_root, settings=settings),
             num_cpus=0, concurrency=4)
        .flat_map(_expand, num_cpus=0)
        .map_batches(ChunkEncoder, **encode_args)
        .groupby("id")
        .map_groups(functools.partial(_package, output=output, settings=settings), num_cpus=0)
    )
    results = {row["id"]: row for row in dataset.take_all()}
    ordered = [_clean(results.get(row["id"]) or {"id": row["id"], "input": row["input"], "status": "errored",
                                                 "error_type": "internal_error", "error": "no result"})
               for row in rows]
    _write_results(ordered, output, settings)
    log.info("batch done", extra={"videos": len(rows), "seconds": round(time.perf_counter() - started, 2),
                                  "errored": sum(r["status"] != "ready" for r in ordered)})
    return ordered


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    out = {name: row.get(name) for name in RESULT_SCHEMA.names}
    for name in ("error_type", "error"):
        out[name] = out[name] or None
    return out


def _write_results(rows: list[dict[str, Any]], output: str, settings: Settings) -> None:
    table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "results.parquet")
        pq.write_table(table, path)
        ObjectStore(output, settings.storage).put_file(path, "results.parquet")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kinoray.jobs.batch", description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="CSV or Parquet manifest (path or URL)")
    parser.add_argument("--output", required=True, help="directory or object-storage prefix for all videos")
    parser.add_argument("--concurrency", type=int, default=None, help="encoder actors (default: from the cluster)")
    from kinoray.cli import add_engine_arguments, engine_options

    add_engine_arguments(parser)
    args = parser.parse_args(argv)
    settings = get_settings()
    setup_logging(settings.log_level, settings.native_log_level)
    rows = run_job(lambda: run_batch(args.manifest, args.output, defaults=engine_options(args), settings=settings,
                                     concurrency=args.concurrency))
    if rows is None:
        return FAILED
    summary = {"videos": len(rows), "ready": sum(r["status"] == "ready" for r in rows),
               "errored": [r["id"] for r in rows if r["status"] != "ready"],
               "results": join_url(args.output, "results.parquet")}
    print(json.dumps(summary))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
