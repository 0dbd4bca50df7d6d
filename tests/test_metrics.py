"""``GET /metrics``: request counters and latency by route template, database gauges, the runner's metrics,
one family per name; the Grafana dashboard's queries against a real scrape; a smoke run of the API latency
benchmark.

Counters live in process-wide registries shared with other tests, so assertions compare before and after.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from starlette.middleware.base import BaseHTTPMiddleware

from kinoray.control.assets import NewAssetSettings, create_asset
from kinoray.serve import metrics
from kinoray.store.models import Asset, Job, WebhookEndpoint

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "kinoray.json"
ASSET_ROUTE = "/video/v1/assets/{asset_id}"


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.families = list(text_string_to_metric_families(text))

    def value(self, sample: str, **labels: str) -> float:
        for family in self.families:
            for s in family.samples:
                if s.name == sample and s.labels == labels:
                    return float(s.value)
        return 0.0

    def samples(self, sample: str) -> list[Any]:
        return [s for family in self.families for s in family.samples if s.name == sample]

    def family(self, name: str) -> Any:
        matches = [family for family in self.families if family.name == name]
        assert len(matches) == 1, f"{name}: {len(matches)} families"
        return matches[0]

    def names(self) -> set[str]:
        """Every name a query can use: sample names, plus the suffixed names of families with no samples yet."""
        names: set[str] = set()
        for family in self.families:
            names.add(family.name)
            names.update(s.name for s in family.samples)
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        return names


def scrape(server) -> Scrape:
    answer = requests.get(f"{server.url}/metrics", timeout=10)  # no credentials: /metrics is open
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(answer.text)


def new_assets(server, count: int) -> list[str]:
    with server.platform.db.session() as session:
        return [create_asset(session, server.settings, NewAssetSettings(), input_url="https://example.com/in.mp4").id
                for _ in range(count)]


def test_requests_are_counted_by_route_template(api) -> None:
    ids = new_assets(api, 3)
    before = scrape(api)
    for asset_id in ids:
        assert api.client.get(f"{api.url}/video/v1/assets/{asset_id}", timeout=10).status_code == 200
    after = scrape(api)
    counted = after.value("kinoray_http_requests_total", method="GET", route=ASSET_ROUTE, status="200")
    assert counted - before.value("kinoray_http_requests_total", method="GET", route=ASSET_ROUTE, status="200") == 3
    timed = after.value("kinoray_http_request_duration_seconds_count", method="GET", route=ASSET_ROUTE)
    assert timed - before.value("kinoray_http_request_duration_seconds_count", method="GET", route=ASSET_ROUTE) == 3
    inf = after.value("kinoray_http_request_duration_seconds_bucket", method="GET", route=ASSET_ROUTE, le="+Inf")
    assert inf == timed
    routes = {s.labels["route"] for s in after.samples("kinoray_http_requests_total")}
    assert not any(asset_id in route for route in routes for asset_id in ids)  # templates, never raw paths
    assert {"/metrics", ASSET_ROUTE} <= routes


def test_errors_and_unmatched_paths_are_counted(api) -> None:
    before = scrape(api)
    assert requests.get(f"{api.url}/video/v1/assets", timeout=10).status_code == 401
    assert api.client.get(f"{api.url}/video/v1/assets/{'x' * 32}", timeout=10).status_code == 404
    assert requests.get(f"{api.url}/no/such/thing/42", timeout=10).status_code == 404
    assert requests.delete(f"{api.url}/healthz", timeout=10).status_code == 405
    after = scrape(api)

    def delta(**labels: str) -> float:
        return (after.value("kinoray_http_requests_total", **labels)
                - before.value("kinoray_http_requests_total", **labels))

    assert delta(method="GET", route="/video/v1/assets", status="401") == 1
    assert delta(method="GET", route=ASSET_ROUTE, status="404") == 1
    assert delta(method="GET", route=metrics.UNMATCHED, status="404") == 1
    assert delta(method="DELETE", route="/healthz", status="405") == 1


def test_database_gauges(api) -> None:
    with api.platform.db.session() as session:
        session.add(WebhookEndpoint(url="https://hooks.example.com/kinoray"))
    new_assets(api, 2)  # each emits video.asset.created: one pending delivery per asset
    with api.platform.db.session() as session:
        preparing = session.scalar(sa.select(sa.func.count()).select_from(Asset).where(Asset.status == "preparing"))
        queued = session.scalar(sa.select(sa.func.count()).select_from(Job).where(Job.state == "queued"))
    metrics.database_gauges.invalidate()
    first = scrape(api)
    assert first.value("kinoray_assets", status="preparing") == preparing
    assert first.value("kinoray_assets", status="ready") == 0  # every known value is present, even at zero
    assert first.value("kinoray_jobs", state="queued") == queued
    assert {s.labels["state"] for s in first.samples("kinoray_jobs")} >= {"queued", "encoding", "ready", "errored"}
    assert {s.labels["status"] for s in first.samples("kinoray_uploads")} >= {"waiting", "asset_created"}
    assert first.value("kinoray_webhook_deliveries_pending") == 2

    new_assets(api, 1)
    cached = scrape(api)  # within the cache window: the database is not read again
    assert cached.value("kinoray_assets", status="preparing") == preparing
    metrics.database_gauges.invalidate()
    assert scrape(api).value("kinoray_assets", status="preparing") == preparing + 1


def test_one_family_per_name_and_runner_metrics_included(api) -> None:
    result = scrape(api)
    declared = re.findall(r"^# TYPE (\S+) ", result.text, flags=re.MULTILINE)
    assert len(declared) == len(set(declared))
    names = [family.name for family in result.families]
    assert len(names) == len(set(names))
    # Without a runner handle, this process's default registry stands in for the runner's.
    for name in ("kinoray_jobs_finished", "kinoray_chunks_encoded", "kinoray_encoder_fallbacks",
                 "kinoray_webhook_deliveries", "kinoray_http_requests", "kinoray_jobs"):
        result.family(name)


class FakeRunner:
    """A stand-in for the runner's DeploymentHandle: ``metrics_text.remote()`` is awaitable."""

    def __init__(self, answer: str | Exception) -> None:
        self.metrics_text = self
        self.answer = answer

    def remote(self) -> Any:
        async def call() -> str:
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

        return call()


def test_runner_handle(api) -> None:
    runner_text = "# HELP kinoray_test_runner_only A metric only the fake runner has\n" \
                  "# TYPE kinoray_test_runner_only counter\nkinoray_test_runner_only_total 7.0\n"
    try:
        metrics.set_runner(FakeRunner(runner_text))
        result = scrape(api)
        assert result.value("kinoray_test_runner_only_total") == 7
        assert result.value("kinoray_runner_metrics_up") == 1
        assert not [f for f in result.families if f.name == "kinoray_jobs_finished"]  # not this process's
        metrics.set_runner(FakeRunner(RuntimeError("runner replica died")))
        result = scrape(api)  # still answers, with the API's own metrics
        assert result.value("kinoray_runner_metrics_up") == 0
        assert result.samples("kinoray_http_requests_total")
        assert not result.samples("kinoray_test_runner_only_total")
    finally:
        metrics.set_runner(None)


def test_middleware_is_pure_asgi() -> None:
    from kinoray.serve.app import build_api

    app = build_api()
    classes = [m.cls for m in app.user_middleware]
    assert metrics.RequestMetricsMiddleware in classes
    assert not any(isinstance(c, type) and issubclass(c, BaseHTTPMiddleware) for c in classes)


# --- the Grafana dashboard ---------------------------------------------------------------------------------

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                 "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, label names, label values, durations)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, $__rate_interval
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _PROMQL_WORDS:
            names.add(name)
    return names


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return panels


def test_promql_name_extraction() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, route) (rate(kinoray_http_request_duration_seconds_bucket'
            '{status=~"4.."}[$__rate_interval]))) / on(instance) max(kinoray_jobs)')
    assert promql_metric_names(expr) == {"kinoray_http_request_duration_seconds_bucket", "kinoray_jobs"}


def test_grafana_dashboard_matches_the_metrics(api) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    assert [entry["name"] for entry in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = dashboard_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"

    api.client.get(f"{api.url}/video/v1/assets", timeout=10)  # so the latency histogram has buckets
    served = scrape(api).names()
    used: set[str] = set()
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            names = promql_metric_names(target["expr"])
            assert names, target["expr"]
            assert names <= served, f"{panel['title']}: {sorted(names - served)} not in /metrics"
            used |= names
    for required in ("kinoray_http_requests_total", "kinoray_http_request_duration_seconds_bucket",
                     "kinoray_jobs_finished_total", "kinoray_jobs", "kinoray_chunks_encoded_total",
                     "kinoray_encoder_fallbacks_total", "kinoray_upload_bytes_total",
                     "kinoray_webhook_deliveries_total", "kinoray_webhook_deliveries_pending"):
        assert required in used, f"no panel uses {required}"


# --- the API latency benchmark -----------------------------------------------------------------------------


@pytest.mark.slow
def test_api_latency_benchmark_smoke(api, api_backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if api_backend.kind != "sqlite":
        pytest.skip("the benchmark's client does not depend on the database: its smoke runs on SQLite only")
    monkeypatch.setattr(api.platform.settings.api, "allow_private_inputs", True)  # it creates its own assets
    with api.platform.db.session() as session:
        session.execute(sa.delete(Asset))
    out = tmp_path / "api_latency.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "api_latency.py"), "--url", api.url,
               f"--token-id={api.token_id}", f"--token-secret={api.secret}", "--rate", "50", "--seconds", "2",
               "--warmup-seconds", "0.2", "--assets", "2", "--json", str(out)]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "target p95 < 20 ms" in finished.stdout
    result = json.loads(out.read_text())
    assert result["config"]["rate"] == 50 and len(result["config"]["assets"]) == 2
    endpoints = result["endpoints"]
    assert set(endpoints) == {"asset", "list", "all"}
    assert endpoints["asset"]["path"] == f"/video/v1/assets/{result['config']['assets'][0]}"
    assert endpoints["asset"]["requests"] == endpoints["list"]["requests"] == 50
    assert endpoints["all"]["requests"] == 100
    for row in endpoints.values():
        assert row["ok"] + row["error_count"] == row["requests"]
        if row["ok"]:
            assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert endpoints["all"]["ok"] >= 95  # on a busy 2-core machine a timeout or two is tolerable
    assert isinstance(result["target"]["pass"], bool)
    with api.platform.db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Asset)) == 2
