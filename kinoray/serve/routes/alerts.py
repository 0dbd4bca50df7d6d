"""Alerts over Mux Data (:mod:`kinoray.control.alerts`), a token with ``data`` permission:

- ``POST/GET /data/v1/alerts``, ``GET/PATCH/DELETE /data/v1/alerts/{id}``: alert rules (kinoray's paths: Mux has
  no public API for its alert rules);
- ``GET /data/v1/incidents``, ``/data/v1/incidents/{id}``, ``/data/v1/incidents/{id}/related``: the incidents
  rules opened, in Mux's ``Incident`` shape and paths (mux-python's ``IncidentsApi`` reads them).

Beside them, the ``kinoray_data_incidents_open{rule_id,rule}`` gauge on the API's registry (read from the
database, cached :data:`GAUGE_TTL_SECONDS`), so ``GET /metrics`` shows what is open whichever process
evaluated the rules.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from pydantic import BaseModel

from kinoray.control import alerts
from kinoray.control.alerts import AlertRuleCreate, AlertRuleUpdate, AlertRuleView, IncidentView
from kinoray.serve.deps import CurrentToken, PlatformDep
from kinoray.serve.metrics import CachedDatabaseCollector
from kinoray.serve.schemas import AUTHENTICATED, Envelope, error_responses
from kinoray.telemetry import API_REGISTRY

__all__ = ["GAUGE_TTL_SECONDS", "IncidentGauge", "router"]


router = APIRouter(tags=["data alerts"], responses=error_responses(*AUTHENTICATED))
_Limit = Annotated[int, Query(ge=1, le=100)]
_Page = Annotated[int, Query(ge=1, le=10_000)]


class AlertRuleListing(BaseModel):
    data: list[AlertRuleView]
    total_row_count: int


class IncidentListing(BaseModel):
    """Mux's ``ListIncidentsResponse``."""

    data: list[IncidentView]
    total_row_count: int
    timeframe: list[int]


class IncidentEnvelope(BaseModel):
    """Mux's ``IncidentResponse``."""

    data: IncidentView
    total_row_count: int | None = None
    timeframe: list[int]


@router.post("/data/v1/alerts", status_code=201, response_model=Envelope[AlertRuleView])
def create_alert(body: AlertRuleCreate, platform: PlatformDep, token: CurrentToken) -> Envelope[AlertRuleView]:
    """A new alert rule (kinoray's: Mux has no public alert API). The job runner evaluates it every
    `analytics.alert_seconds`; its incidents go out as `video.data.incident.opened|closed` webhooks."""
    with platform.db.session() as session:
        rule = alerts.create_rule(session, body)
        return Envelope(data=alerts.rule_view(session, rule))


@router.get("/data/v1/alerts", response_model=AlertRuleListing)
def list_alerts(platform: PlatformDep, token: CurrentToken, limit: _Limit = 25, page: _Page = 1) -> AlertRuleListing:
    """Alert rules, newest first."""
    with platform.db.reader() as session:
        rows, total = alerts.list_rules(session, limit=limit, page=page)
        return AlertRuleListing(data=[alerts.rule_view(session, row) for row in rows], total_row_count=total)


@router.get("/data/v1/alerts/{alert_id}", response_model=Envelope[AlertRuleView], responses=error_responses(404))
def get_alert(alert_id: str, platform: PlatformDep, token: CurrentToken) -> Envelope[AlertRuleView]:
    with platform.db.reader() as session:
        return Envelope(data=alerts.rule_view(session, alerts.get_rule(session, alert_id)))


@router.patch("/data/v1/alerts/{alert_id}", response_model=Envelope[AlertRuleView], responses=error_responses(404))
def update_alert(alert_id: str, body: AlertRuleUpdate, platform: PlatformDep,
                 token: CurrentToken) -> Envelope[AlertRuleView]:
    """Change a rule; its open incidents stay until the next evaluation judges them under the new rule."""
    with platform.db.session() as session:
        rule = alerts.update_rule(session, alert_id, body)
        return Envelope(data=alerts.rule_view(session, rule))


@router.delete("/data/v1/alerts/{alert_id}", status_code=204, responses=error_responses(404))
def delete_alert(alert_id: str, platform: PlatformDep, token: CurrentToken) -> Response:
    """Delete a rule: its open incidents close first (with their webhooks), then its incidents go with it."""
    with platform.db.session() as session:
        alerts.delete_rule(session, alert_id)
    _GAUGE.invalidate()
    return Response(status_code=204)


@router.get("/data/v1/incidents", response_model=IncidentListing)
def list_incidents(platform: PlatformDep, token: CurrentToken, limit: _Limit = 25, page: _Page = 1,
                   order_by: Literal["started_at", "resolved_at", "measured_value", "sample_size"] = "started_at",
                   order_direction: Literal["asc", "desc"] = "desc",
                   status: Literal["open", "closed"] | None = None,
                   severity: Literal["warning", "alert"] | None = None,
                   rule_id: Annotated[str | None, Query(max_length=64, description="kinoray's: one rule's")] = None,
                   ) -> IncidentListing:
    """Incidents of every alert rule, most recent first (Mux's `IncidentsApi.list_incidents`)."""
    with platform.db.reader() as session:
        rows, total = alerts.list_incidents(session, limit=limit, page=page, status=status, severity=severity,
                                            rule_id=rule_id, order_by=order_by,
                                            descending=order_direction == "desc")
        data = [alerts.incident_view(row) for row in rows]
    now = int(time.time())
    timeframe = [int(min(row.started_at for row in rows).timestamp()) if rows else now, now]
    return IncidentListing(data=data, total_row_count=total, timeframe=timeframe)


@router.get("/data/v1/incidents/{incident_id}", response_model=IncidentEnvelope, responses=error_responses(404))
def get_incident(incident_id: str, platform: PlatformDep, token: CurrentToken) -> IncidentEnvelope:
    with platform.db.reader() as session:
        row = alerts.get_incident(session, incident_id)
        return IncidentEnvelope(data=alerts.incident_view(row),
                                timeframe=[int(row.started_at.timestamp()), int(time.time())])


@router.get("/data/v1/incidents/{incident_id}/related", response_model=IncidentListing,
            responses=error_responses(404))
def list_related_incidents(incident_id: str, platform: PlatformDep, token: CurrentToken, limit: _Limit = 25,
                           page: _Page = 1,
                           order_by: Literal["started_at", "resolved_at", "measured_value",
                                             "sample_size"] = "started_at",
                           order_direction: Literal["asc", "desc"] = "desc") -> IncidentListing:
    """The incidents that seem related to this one (Mux's `IncidentsApi.list_related_incidents`): of any rule,
    overlapping its time (give or take 30 minutes) and sharing a dimension value with it, or about all views."""
    with platform.db.reader() as session:
        incident = alerts.get_incident(session, incident_id)
        rows, total = alerts.related_incidents(session, incident_id, limit=limit, page=page, order_by=order_by,
                                               descending=order_direction == "desc")
        data = [alerts.incident_view(row) for row in rows]
        started = min([incident.started_at, *(row.started_at for row in rows)])
    return IncidentListing(data=data, total_row_count=total, timeframe=[int(started.timestamp()), int(time.time())])


# --- the open-incidents gauge -------------------------------------------------------------------------------
#: How long the gauge's database read is reused between scrapes.
GAUGE_TTL_SECONDS = 2.0


class IncidentGauge(CachedDatabaseCollector[dict[tuple[str, str], int]]):
    """``kinoray_data_incidents_open{rule_id,rule}``: open incidents per alert rule (every rule listed, zeros
    included), read from the platform's database at most once per ``ttl``; left out when it cannot be read."""

    what = "incident gauge"

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("kinoray_data_incidents_open", "Open Mux Data incidents, by alert rule",
                                 labels=["rule_id", "rule"])

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def read(self, session: Any) -> dict[tuple[str, str], int]:
        return alerts.open_incident_counts(session)

    def families(self, values: dict[tuple[str, str], int]) -> Iterable[Metric]:
        family = self._family()
        for (rule_id, name), count in sorted(values.items()):
            family.add_metric([rule_id, name], count)
        return [family]


_GAUGE = IncidentGauge(GAUGE_TTL_SECONDS)
API_REGISTRY.register(_GAUGE)
