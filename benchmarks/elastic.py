"""A node that joins a running transcode: how soon it takes work, and what it does to the job's wall time.

    .venv/bin/python benchmarks/elastic.py                 # 60 s 720p 3-rung ladder, 3 runs (~4 min)
    .venv/bin/python benchmarks/elastic.py --seconds 30    # shorter

One ``ray.cluster_utils.Cluster`` on this machine: a head with no CPU (as KubeRay's) and one 1-CPU node, so a
job starts with one encoder worker. Runs, on the same clip and the same chunk plan (``parallelism=2``):

* ``fixed`` — one node for the whole job (the baseline);
* ``joined`` — a second 1-CPU node is added as the job starts encoding, and the job's node rescan
  (``rescan_nodes_seconds``, 2 s: the product default) starts a worker on it;
* ``rescan off`` — the same node added, ``rescan_nodes_seconds=0``: the job ignores it (control).

Reported per run: wall, encode stage, × realtime, workers used; for ``joined``: seconds from the node being
up to the job's first chunk on it (rescan wait + actor start: process, imports, encoder probe) and the
speed-up of the encode stage over ``fixed``. Workers run one encoder session at a time
(``parallel_renditions=False``) so one worker is one core, and every job starts its own actors
(``keep_workers_seconds=0``). JSON: ``benchmarks/results/elastic.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import scaling  # noqa: E402  (cached inputs, encode options)

LADDER = (720, 480, 360)
RUNS = ("fixed", "joined", "rescan off")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the 720p clip")
    parser.add_argument("--chunk-seconds", type=float, default=4.0)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--rescan-seconds", type=float, default=2.0)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "elastic-work")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "elastic.json")
    return parser.parse_args(argv)


def run_one(cluster: Any, label: str, source: Path, args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from kinoray.cluster import ChunkEvent, JobRecord, JobState, TranscodeJob
    from kinoray.settings import Settings

    rescan = 0.0 if label == "rescan off" else args.rescan_seconds
    settings = Settings(data_dir=args.work / "data")
    settings = settings.model_copy(update={"cluster": settings.cluster.model_copy(update={
        "keep_workers_seconds": 0, "rescan_nodes_seconds": rescan})})
    options = scaling._options(ladder=LADDER, segment_seconds=scaling.SEGMENT_S, chunk_seconds=args.chunk_seconds,
                               preset=args.preset, parallelism=2)
    before = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    added: list[Any] = []
    up_at: list[float] = []
    events: list[ChunkEvent] = []
    workers = [0]

    def on_update(record: JobRecord) -> None:
        workers[0] = max(workers[0], record.workers)
        if label != "fixed" and record.state is JobState.ENCODING and not added:
            added.append(cluster.add_node(num_cpus=1))
            cluster.wait_for_nodes()
            up_at.append(time.time())

    t0 = time.perf_counter()
    result = TranscodeJob(str(source), str(args.work / "out" / label.replace(" ", "-")), options,
                          settings=settings, on_update=on_update, on_event=events.append).run()
    wall = time.perf_counter() - t0
    for node in added:
        cluster.remove_node(node)
    new_chunks = [e for e in events if e.kind == "done" and e.worker_node not in before]
    first_new = min((e.at for e in events if e.kind == "dispatched" and e.worker_node not in before), default=None)
    encode = result.stage_seconds["encode"]
    return {
        "label": label, "wall_s": wall, "encode_s": encode, "realtime": result.duration_seconds / wall,
        "chunks": result.chunks, "chunks_on_new_node": len(new_chunks), "workers_max": workers[0],
        "join_s": (first_new - up_at[0]) if first_new is not None and up_at else None,
        "retries": result.retries, "duration_s": result.duration_seconds,
    }


def main(argv: list[str] | None = None) -> None:
    import ray
    from ray.cluster_utils import Cluster
    from rich.console import Console
    from rich.table import Table

    args = parse_args(argv)
    console = Console(width=140)
    source = scaling.ensure_media(1280, 720, args.seconds, audio=False)
    console.print(f"[bold]kinoray elastic pool[/] — {source.name}, ladder {LADDER}, {args.chunk_seconds:g} s chunks, "
                  f"preset {args.preset}; head 0 CPU + one 1-CPU node")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    runs: dict[str, dict[str, Any]] = {}
    try:
        for label in RUNS:
            runs[label] = run_one(cluster, label, source, args)
            console.print(f"  {label}: wall {runs[label]['wall_s']:.1f} s, encode {runs[label]['encode_s']:.1f} s")
    finally:
        ray.shutdown()
        cluster.shutdown()
    speedup = runs["fixed"]["encode_s"] / runs["joined"]["encode_s"]
    table = Table(title="a node joining a running job (2-core VM)")
    for column in ("run", "wall s", "encode s", "× realtime", "workers", "chunks on new node", "join s"):
        table.add_column(column, justify="right")
    for run in runs.values():
        join = "–" if run["join_s"] is None else f"{run['join_s']:.2f}"
        table.add_row(run["label"], f"{run['wall_s']:.1f}", f"{run['encode_s']:.1f}", f"{run['realtime']:.2f}",
                      str(run["workers_max"]), f"{run['chunks_on_new_node']}/{run['chunks']}", join)
    console.print(table)
    console.print(f"encode stage, joined vs fixed: ×{speedup:.2f} (a second core from the moment its worker answers)")
    report = {"runs": runs, "speedup_encode": speedup, "source": source.name, "ladder": LADDER,
              "chunk_seconds": args.chunk_seconds, "preset": args.preset, "rescan_seconds": args.rescan_seconds,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    console.print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
