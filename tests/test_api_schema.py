"""schemathesis over the running API's own ``/openapi.json`` (SQLite and PostgreSQL): generated requests —
valid and invalid — to every operation never get a 5xx, and every response conforms to the document (status
codes, content types, JSON schemas, headers)."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings


@pytest.fixture(scope="module")
def api(api_backend, tmp_path_factory: pytest.TempPathFactory):
    """The API with a rate limit schemathesis does not hit (429s would hide real answers)."""
    from tests.api_server import ApiServer

    server = ApiServer(api_backend.new_url(), tmp_path_factory.mktemp("schema-data"),
                       api={"rate_limit_per_second": 100_000, "rate_limit_burst": 100_000})
    try:
        yield server
    finally:
        server.close()


#: Checks that do not apply to an operation, and why.
EXCLUDED = {
    # a schema-valid input URL is still refused at run time when it points at a private address (SSRF policy)
    "POST /video/v1/assets": ["positive_data_acceptance"],
    "POST /video/v1/assets/{asset_id}/tracks": ["positive_data_acceptance"],
    "POST /system/v1/webhook-endpoints": ["positive_data_acceptance"],
    "PATCH /system/v1/webhook-endpoints/{endpoint_id}": ["positive_data_acceptance"],
    "POST /system/v1/webhooks": ["positive_data_acceptance"],
    "PATCH /system/v1/webhooks/{webhook_id}": ["positive_data_acceptance"],
    # Mux's advanced_playback_policies enum includes drm, which kinoray refuses by name (also in
    # new_asset_settings)
    "POST /video/v1/live-streams": ["positive_data_acceptance"],
    # kinoray_scheduled_end must come after kinoray_scheduled_start: not in a schema
    "PATCH /video/v1/live-streams/{live_stream_id}": ["positive_data_acceptance"],
    # timeframe[] must be two times, start before end, and asset_id excludes live_stream_id: not in a schema
    "GET /video/v1/delivery-usage": ["positive_data_acceptance"],
    # Mux Data: two timeframe[] values must be in order (and not a duration and a time): not in a schema
    "GET /data/v1/metrics/{metric_id}/overall": ["positive_data_acceptance"],
    "GET /data/v1/metrics/{metric_id}/breakdown": ["positive_data_acceptance"],
    "GET /data/v1/metrics/{metric_id}/timeseries": ["positive_data_acceptance"],
    "GET /data/v1/video-views": ["positive_data_acceptance"],
    "GET /data/v1/dimensions/{dimension_id}": ["positive_data_acceptance"],
    "GET /data/v1/filters/{filter_id}": ["positive_data_acceptance"],
    # at most 10 minutes within the last 24 hours, start before end: not in a schema
    "GET /data/v1/monitoring/metrics/{realtime_metric_id}/breakdown-timeseries": ["positive_data_acceptance"],
    "GET /data/v1/metrics/{metric_id}/insights": ["positive_data_acceptance"],
    "GET /data/v1/metrics/{metric_id}/comparison": ["positive_data_acceptance"],
    "GET /data/v1/metrics/comparison": ["positive_data_acceptance"],
    "GET /data/v1/errors": ["positive_data_acceptance"],
    # a view export's date must be a day within the retention period, not in the future: not in a schema
    "POST /data/v1/exports/views": ["positive_data_acceptance"],
    # an alert rule's fields depend on its kind (a threshold rule needs comparison and threshold, an anomaly
    # rule watches four metrics and has neither), and a PATCH is checked against the stored rule's kind
    "POST /data/v1/alerts": ["positive_data_acceptance"],
    "PATCH /data/v1/alerts/{alert_id}": ["positive_data_acceptance"],
}


def _excluded(operation) -> list[str]:
    names = list(EXCLUDED.get(operation.label, []))
    # an opaque cursor matching the schema's pattern is still refused when it is not one the API issued
    if any(parameter.name == "cursor" for parameter in operation.query):
        names.append("positive_data_acceptance")
    return names


def _operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(url)
    return [result.ok() for result in schema.get_all_operations()]


def _checker(operation, excluded_names: list[str], examples: int = 30, **call):
    excluded = [getattr(schemathesis.checks, name) for name in excluded_names]

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        case.call_and_validate(excluded_checks=excluded, **call)

    return check


def _failures(operations: list, excluded, examples: int = 30, **call) -> list[str]:
    """Every operation checked with ``examples`` generated cases; the failures of all of them (each operation's
    first, shortened)."""
    failures: list[str] = []
    for operation in operations:
        try:
            _checker(operation, excluded(operation), examples, **call)()
        except Exception as error:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {str(error)[:1500]}")
    return failures


def test_api_conforms_to_its_openapi(api, api_backend) -> None:
    operations = _operations(f"{api.url}/openapi.json")
    assert len(operations) >= 10
    # PostgreSQL, the production database, gets the thorough run; SQLite every operation with fewer cases
    examples = 30 if api_backend.kind == "postgresql" else 10
    failures = _failures(operations, _excluded, examples, session=api.client)
    assert not failures, "\n\n".join(failures)


def test_openapi_document_is_served_with_docs(api) -> None:
    document = requests.get(f"{api.url}/openapi.json", timeout=10).json()
    assert document["info"]["title"] == "kinoray"
    assert requests.get(f"{api.url}/docs", timeout=10).status_code == 200


#: Edge operations' checks that do not apply, and why.
EDGE_EXCLUDED: dict[str, list[str]] = {
    # the beacon collector keeps unknown keys, but a few known ones have types the schema leaves open (a short
    # key such as `vid` that must be text), and text with NUL or an unpaired surrogate is refused
    "POST /": ["positive_data_acceptance"],
    "POST /data/v1/beacons": ["positive_data_acceptance"],
}


def test_edge_conforms_to_its_openapi(api) -> None:
    """The delivery edge's own document (the upload URL, beacons, its health; image and player pages are not
    API operations and are left out of it): the same checks, against the edge."""
    operations = _operations(f"{api.edge_url}/edge/openapi.json")
    assert len(operations) >= 8
    failures = _failures(operations, lambda operation: EDGE_EXCLUDED.get(operation.label, []),
                         base_url=api.edge_url)
    assert not failures, "\n\n".join(failures)
