"""Ray job entrypoint: transcode one input to a CMAF HLS/DASH package on the cluster.

Run it locally (a local Ray is started) or submit it to a running cluster::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m kinoray.jobs.transcode --input s3://bucket/in.mp4 --output s3://bucket/assets/a1

Progress goes to stderr (a bar when attached to a terminal); the result is one JSON object on stdout
(``{"result": ..., "job": ...}``). Errors are one JSON object on stderr (``{"error": {"type", "messages"}}``)
and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from kinoray.cli import JobProgress, add_engine_arguments, engine_options
from kinoray.cluster import JobRecord, TranscodeJob
from kinoray.errors import KinorayError
from kinoray.logs import setup_logging
from kinoray.settings import get_settings

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kinoray.jobs.transcode", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="path or URL (file://, s3://, http(s)://)")
    parser.add_argument("--output", required=True, help="directory or object-storage prefix")
    parser.add_argument("--job-id", default=None, help="stable id (names the work prefix); default random")
    parser.add_argument("--max-workers", type=int, default=None, help="cap on encoder workers (default: all)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_engine_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    setup_logging(settings.log_level, settings.native_log_level)
    if args.max_workers:
        settings = settings.model_copy(
            update={"cluster": settings.cluster.model_copy(update={"max_workers": args.max_workers})})
    job: TranscodeJob | None = None
    try:
        with JobProgress(fps=0.0, quiet=args.quiet or not sys.stderr.isatty()) as progress:
            def update(record: JobRecord) -> None:
                progress.record(record)
                if not sys.stderr.isatty() and record.state.finished:
                    print(f"job {record.job_id}: {record.state.value}", file=sys.stderr)  # noqa: T201

            job = TranscodeJob(args.input, args.output, engine_options(args), job_id=args.job_id, settings=settings,
                               on_update=update)
            result = job.run()
    except KinorayError as e:
        print(json.dumps({"error": {"type": e.type, "messages": [str(e)]},  # noqa: T201
                          "job": job.record.to_dict() if job else None}, default=str), file=sys.stderr)
        return 2
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    print(json.dumps({"result": result.to_dict(), "job": job.record.to_dict()}, default=str))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
