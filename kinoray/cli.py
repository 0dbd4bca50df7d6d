"""``kinoray`` command line: probe, transcode, demo, up, token, environment."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from kinoray.errors import KinorayError
from kinoray.logs import setup_logging
from kinoray.media.pipeline import TranscodeOptions, TranscodeResult, transcode_file
from kinoray.media.probe import probe
from kinoray.settings import get_settings

if TYPE_CHECKING:
    from kinoray.cluster.progress import JobRecord

__all__ = ["JobProgress", "add_engine_arguments", "engine_options", "main", "parse_ladder", "run_transcode"]

log = logging.getLogger("kinoray.cli")


class _RateColumn(ProgressColumn):
    """frames/s and × realtime of the work done so far."""

    def __init__(self, fps: float) -> None:
        super().__init__()
        self.fps = fps

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0
        if not elapsed or not task.completed:
            return Text("…", style="progress.data.speed")
        frames_per_second = task.completed / elapsed
        if not self.fps:
            return Text(f"{frames_per_second:6.1f} fps", style="progress.data.speed")
        realtime = frames_per_second / self.fps
        return Text(f"{frames_per_second:6.1f} fps  {realtime:5.2f}× realtime", style="progress.data.speed")


def parse_ladder(value: str) -> tuple[int, ...]:
    try:
        heights = tuple(int(part.rstrip("p")) for part in value.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("ladder is a comma list of heights, e.g. 1080,720,480") from None
    if not heights or any(h < 2 for h in heights):
        raise argparse.ArgumentTypeError("ladder heights must be positive")
    return heights


class JobProgress:
    """A rich progress bar fed by frame counts (in-process runs) or :class:`JobRecord` updates (cluster runs)."""

    def __init__(self, fps: float, quiet: bool = False) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
            _RateColumn(fps), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True, quiet=quiet), transient=False,
        )
        self.task = self.bar.add_task("transcoding", total=None)

    def __enter__(self) -> JobProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            self.bar.live.transient = True  # a failed run leaves its error line, not a stalled bar
        self.bar.__exit__(*exc)

    def frames(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)

    def record(self, record: JobRecord) -> None:
        retries = f" · {record.retries} retried" if record.retries else ""
        workers = f" · {record.workers} workers" if record.workers else ""
        self.bar.update(self.task, completed=record.frames_done, total=record.frames_total or None,
                        description=f"{record.state.value}{workers}{retries}")


def run_transcode(source: str, output: str, options: TranscodeOptions, workers: int, quiet: bool,
                  job_id: str | None = None) -> TranscodeResult:
    """Transcode with a progress bar: in this process (``workers == 1``) or on the Ray cluster (0 = every
    CPU of the cluster, N = at most N workers)."""
    info = probe(source, options.limits)
    fps = float(info.video.average_rate or info.video.real_rate or 30) if info.video else 0
    with JobProgress(fps, quiet) as progress:
        if workers == 1:
            return transcode_file(source, output, options, progress=progress.frames)
        from kinoray.cluster import TranscodeJob

        settings = get_settings()
        if workers > 1:
            settings = settings.model_copy(
                update={"cluster": settings.cluster.model_copy(update={"max_workers": workers})})
        return TranscodeJob(source, output, options, job_id=job_id, settings=settings,
                            on_update=progress.record).run()


def _print_summary(result: TranscodeResult, console: Console) -> None:
    table = Table(title=f"{result.out_dir}", show_lines=False)
    for column in ("rendition", "size", "codecs", "peak kb/s", "avg kb/s", "segments", "frames", "MB"):
        table.add_column(column)
    for r in result.renditions:
        table.add_row(r.name, f"{r.width}x{r.height}", r.codec_string, f"{r.bandwidth / 1000:.0f}",
                      f"{r.average_bandwidth / 1000:.0f}", str(r.segments), str(r.frames), f"{r.bytes / 1e6:.2f}")
    if result.audio:
        a = result.audio
        table.add_row("audio", f"{a['channels']}ch {a['sample_rate']} Hz", a["codec_string"],
                      f"{a['bandwidth'] / 1000:.0f}", "", str(a["segments"]), "", "")
    console.print(table)
    fallback = f" (fallback from {result.fallback_from})" if result.fallback_from else ""
    console.print(f"encoder [bold]{result.encoder}[/]{fallback}; {result.chunks} chunks; "
                  f"{result.wall_seconds:.1f}s wall, {result.realtime_factor:.2f}× realtime")


def engine_options(args: argparse.Namespace, workers: int = 0) -> TranscodeOptions:
    """:class:`TranscodeOptions` from :func:`add_engine_arguments`' flags and Settings. Chunk counts are made a
    multiple of ``workers``; with 0 the cluster layer sizes them from the workers it starts."""
    settings = get_settings()
    return TranscodeOptions(
        parallelism=workers or None,
        codec=args.codec,
        encoder=args.encoder,
        ladder=args.ladder,
        segment_seconds=args.segment_seconds,
        chunk_seconds=args.chunk_seconds,
        max_frame_rate=settings.transcode.max_frame_rate,
        preset=args.preset,
        decoder=args.decoder,
        audio_bitrate=settings.transcode.audio_bitrate,
        limits=settings.limits,
    )


def cmd_probe(args: argparse.Namespace) -> int:
    info = probe(args.input, get_settings().limits)
    print(json.dumps(info.to_dict(), indent=2))  # noqa: T201 — the command's output
    return 0


def cmd_transcode(args: argparse.Namespace) -> int:
    result = run_transcode(args.input, args.outdir, engine_options(args, args.workers), args.workers,
                           quiet=args.json)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))  # noqa: T201
    else:
        _print_summary(result, Console())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kinoray.media.synthetic import generate_clip

    console = Console()
    demo = Path(args.data_dir) / "demo"
    source = demo / "source.mp4"
    if not source.exists():
        console.print(f"generating a 20 s 720p demo clip at {source}")
        generate_clip(source, width=1280, height=720, fps=30, seconds=20)
    out_dir = demo / "out"
    options = TranscodeOptions(ladder=(720, 480, 360, 240), chunk_seconds=8, parallelism=args.workers or None)
    result = run_transcode(str(source), str(out_dir), options, args.workers, quiet=False)
    _print_summary(result, console)
    console.print(f"\nHLS master:   {result.master_playlist}\nDASH MPD:     {result.dash_manifest}\n"
                  f"MP4:          {result.static_rendition}\n")
    console.print("Play it:\n"
                  f"  ffplay {result.master_playlist}        (or open it in VLC / mpv)\n"
                  f"  python3 -m http.server --directory {result.out_dir} 8080\n"
                  "  then load http://127.0.0.1:8080/master.m3u8 in Safari or any hls.js / dash.js player "
                  "(manifest.mpd for DASH)")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from kinoray.serve.launch import up

    return up(args.host, args.port, Path(args.data_dir), demo=args.demo, api_port=args.api_port,
              rtmp_port=args.rtmp_port)


def cmd_edge(args: argparse.Namespace) -> int:
    from kinoray.edge.server import serve

    overrides = {"HOST": args.host, "PORT": args.port, "WORKERS": args.workers, "API_URL": args.api_url,
                 "DOMAIN": args.domain, "TLS_CERT": args.tls_cert, "TLS_KEY": args.tls_key}
    for name, value in overrides.items():
        if value is not None:
            os.environ[f"KINORAY_EDGE__{name}"] = str(value)  # the worker processes read the same settings
    get_settings.cache_clear()
    settings = get_settings()
    log.info("edge starting", extra={"host": settings.edge.host, "port": settings.edge.port,
                                     "api_url": settings.edge.api_url, "tls": settings.edge.tls_cert is not None})
    serve(settings.edge)
    return 0


def _in_database(action: Callable[[Any], object]) -> int:
    """Run ``action`` (printing its JSON) in one transaction on the settings' database; a typed error is
    printed as the API's error body on stderr (exit 1: not found, 2: anything else)."""
    from kinoray.control.platform import Platform

    platform = Platform.from_settings(get_settings())
    try:
        with platform.db.session() as session:
            print(json.dumps(action(session)))  # noqa: T201
        return 0
    except KinorayError as error:
        print(json.dumps({"error": {"type": error.type, "messages": [str(error)]}}), file=sys.stderr)  # noqa: T201
        return 1 if error.type == "not_found" else 2
    finally:
        platform.close()


def _environment_id(session: Any, name_or_id: str) -> str:
    """An environment named by id or name (``kinoray token create --environment``)."""
    import sqlalchemy as sa

    from kinoray.control.environments import get_environment
    from kinoray.errors import NotFoundError
    from kinoray.store.models import Environment

    found = session.scalar(sa.select(Environment.id).where(Environment.name == name_or_id))
    if found is not None:
        return str(found)
    try:
        return get_environment(session, name_or_id).id
    except NotFoundError:
        raise NotFoundError(f"no environment named {name_or_id!r}: see kinoray environment list") from None


def cmd_token(args: argparse.Namespace) -> int:
    """The same control functions as ``/system/v1/access-tokens``, over every environment (no token scopes it)."""
    from kinoray.control.auth import list_tokens, new_token, revoke_token, token_view

    def action(session: Any) -> object:
        if args.action == "create":
            return new_token(session, name=args.name, permissions=args.permission,
                             environment_id=_environment_id(session, args.environment)).model_dump(mode="json")
        if args.action == "list":
            return {"data": [token_view(row).model_dump(mode="json") for row in list_tokens(session)[0]]}
        revoke_token(session, args.id)
        return {"id": args.id, "revoked": True}

    return _in_database(action)


def cmd_environment(args: argparse.Namespace) -> int:
    """The same control functions as ``/system/v1/environments``."""
    from kinoray.control import environments

    def action(session: Any) -> object:
        if args.action == "create":
            return environments.new_environment(session, args.name, args.env_key).model_dump(mode="json")
        if args.action == "list":
            rows, _ = environments.list_environments(session, limit=10_000)
            return {"data": [environments.environment_view(row).model_dump(mode="json") for row in rows]}
        environments.delete_environment(session, _environment_id(session, args.id), caller_environment_id=None)
        return {"id": args.id, "deleted": True}

    return _in_database(action)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The transcode knobs shared by ``kinoray transcode`` and ``python -m kinoray.jobs.transcode``."""
    defaults = get_settings().transcode
    parser.add_argument("--codec", choices=("h264", "hevc", "av1"), default=defaults.codec)
    parser.add_argument("--encoder", default=defaults.encoder, help="auto | libx264 | libx265 | libsvtav1 | nvenc")
    parser.add_argument("--ladder", type=parse_ladder, default=None, help="e.g. 1080,720,480,360")
    parser.add_argument("--segment-seconds", type=float, default=defaults.segment_seconds)
    parser.add_argument("--chunk-seconds", type=float, default=defaults.chunk_seconds)
    parser.add_argument("--preset", default=defaults.preset, help="encoder preset (default per backend)")
    parser.add_argument("--decoder", choices=("auto", "cpu", "nvdec"), default="auto",
                        help="auto uses NVDEC when a CUDA device is usable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kinoray", description="Self-hostable video infrastructure on Ray.")
    parser.add_argument("--log-level", default=None, help="kinoray log level (default from KINORAY_LOG_LEVEL)")
    parser.add_argument("--log-json", action="store_true", help="JSON log lines")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("probe", help="describe a media file as JSON")
    p.add_argument("input")
    p.set_defaults(func=cmd_probe)

    t = sub.add_parser("transcode", help="transcode to a CMAF HLS/DASH ladder")
    t.add_argument("input", help="path or URL (file://, s3://, http(s)://)")
    t.add_argument("outdir", help="directory or object-storage prefix (s3://bucket/assets/id)")
    add_engine_arguments(t)
    t.add_argument("--workers", type=int, default=0,
                   help="chunk workers: 0 = every CPU of the Ray cluster, N = at most N, 1 = in this process")
    t.add_argument("--json", action="store_true", help="print a JSON summary instead of a table")
    t.set_defaults(func=cmd_transcode)

    d = sub.add_parser("demo", help="generate a demo clip and transcode it")
    d.add_argument("--data-dir", default=os.environ.get("KINORAY_DATA_DIR", "./data"))
    d.add_argument("--workers", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    u = sub.add_parser("up", help="run the platform locally: Ray + Serve (API and job runner), SQLite, local storage")
    u.add_argument("--host", default=os.environ.get("KINORAY_EDGE__HOST", "127.0.0.1"))
    u.add_argument("--port", type=int, default=int(os.environ.get("KINORAY_EDGE__PORT", "8000")),
                   help="the port users open: the delivery edge, which forwards the API (default 8000)")
    u.add_argument("--api-port", type=int, default=None,
                   help="Ray Serve's proxy: the management API alone (default --port + 1)")
    u.add_argument("--rtmp-port", type=int, default=None,
                   help="the live RTMP ingest's port (default KINORAY_LIVE__RTMP_PORT, 1935)")
    u.add_argument("--data-dir", default=os.environ.get("KINORAY_DATA_DIR", "./data"))
    u.add_argument("--demo", action="store_true", help="upload a generated clip once up and print its playback URL")
    u.set_defaults(func=cmd_up)

    e = sub.add_parser("edge", help="run the delivery edge (streams, images, uploads, beacons, player) on Granian; "
                                     "other paths are forwarded to --api-url")
    e.add_argument("--host", default=None, help="default KINORAY_EDGE__HOST (127.0.0.1)")
    e.add_argument("--port", type=int, default=None, help="default KINORAY_EDGE__PORT (8080)")
    e.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU)")
    e.add_argument("--api-url", default=None, help="the management API (Serve's proxy) to forward other paths to")
    e.add_argument("--domain", default=None, help="host-based routing: stream.DOMAIN, image.DOMAIN, beacon.DOMAIN")
    e.add_argument("--tls-cert", default=None, help="PEM certificate chain (HTTPS)")
    e.add_argument("--tls-key", default=None, help="PEM private key")
    e.set_defaults(func=cmd_edge)

    k = sub.add_parser("token", help="access tokens (in the database the settings name)")
    actions = k.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="print a new access token id and secret (JSON)")
    create.add_argument("--name", default=None)
    create.add_argument("--permission", action="append", default=None, metavar="PRODUCT=LEVEL",
                        help="video|data|system = read|full, repeatable (default: full access to all three); "
                             "a product left out is refused")
    create.add_argument("--environment", default="default", metavar="NAME_OR_ID",
                        help="the environment whose data the token reads and writes (default: default)")
    actions.add_parser("list", help="print every token of every environment (id, name, environment_id, "
                                    "permissions, revoked; never a secret) as JSON")
    revoke = actions.add_parser("revoke", help="revoke a token")
    revoke.add_argument("id")
    k.set_defaults(func=cmd_token)

    v = sub.add_parser("environment", help="environments that isolate data (in the database the settings name)")
    env_actions = v.add_subparsers(dest="action", required=True)
    env_create = env_actions.add_parser("create", help="a new environment and its first access token (JSON; the "
                                                       "secret is shown once)")
    env_create.add_argument("name")
    env_create.add_argument("--env-key", default=None, help="its Mux Data env_key (default: a new random one)")
    env_actions.add_parser("list", help="print every environment (id, name, env_key) as JSON")
    env_delete = env_actions.add_parser("delete", help="delete an empty environment whose tokens are all revoked")
    env_delete.add_argument("id", metavar="NAME_OR_ID")
    v.set_defaults(func=cmd_environment)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    setup_logging(args.log_level or settings.log_level, settings.native_log_level, json_lines=args.log_json)
    try:
        return int(args.func(args))
    except KinorayError as e:
        payload: dict[str, Any] = {"error": {"type": e.type, "messages": [str(e)]}}
        print(json.dumps(payload), file=sys.stderr)  # noqa: T201
        return 2
    except Exception as e:  # noqa: BLE001 - one typed line, never a traceback (it is logged at DEBUG)
        log.debug("command failed unexpectedly", exc_info=True)
        payload = {"error": {"type": "internal_error", "messages": [f"{type(e).__name__}: {e}"]}}
        print(json.dumps(payload), file=sys.stderr)  # noqa: T201
        return 1
    finally:
        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                ray.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
