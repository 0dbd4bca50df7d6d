"""Alerts over Mux Data (kinoray's own: Mux has no public API for its alert rules): rules, the incidents they
open and close, and their evaluation. No Ray, no HTTP framework.

A rule (:class:`AlertRuleCreate`) watches one metric of the views matching its ``filters`` (the Data API's
``dimension:value`` / ``!dimension:value``):

- ``kind="threshold"``: the metric over the last ``window_seconds`` (the Data API's ``overall`` with the rule's
  ``measurement``, Mux's default otherwise) compared with ``threshold`` (``gt``, ``gte``, ``lt``, ``lte``). It
  fires while the comparison holds over at least ``min_views`` views; with fewer views, or when the comparison
  stops holding, it has recovered. One incident at a time (key ``all``).
- ``kind="anomaly"``: the anomaly detector (:mod:`kinoray.analytics.anomaly`) over the last
  ``analytics.anomaly_history_hours`` of the matching views, searching ``dimensions``; each degradation it is
  still seeing in the last whole 5-minute bucket is an incident keyed by the dimension values that explain it
  (``rebuffer_percentage up 4.1× on asn=AMAZON-02, country=BR since 14:05 UTC``); an incident closes when its
  key is no longer found. The detector is called through a *scorer* (:data:`Scorer`): the job runner's is the
  Ray Serve deployment (:mod:`kinoray.serve.anomaly`); when it does not answer
  (:class:`~kinoray.errors.AnomalyDetectorUnavailableError`) the rule records the error and keeps its
  incidents as they are until the next evaluation.

:func:`evaluate_alerts` evaluates every enabled rule (the job runner calls it every ``analytics.alert_seconds``);
an incident that opens or closes emits ``video.data.incident.opened`` / ``video.data.incident.closed`` (kinoray's
event names) in the same transaction, so it goes out as a signed webhook through the outbox. Incidents read as
Mux's ``Incident`` (``GET /data/v1/incidents``: mux-python's ``IncidentsApi`` reads them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import Field, model_validator
from sqlalchemy.orm import Session

from kinoray.analytics.collect import DIMENSIONS
from kinoray.control import environments
from kinoray.control.events import emit, iso_time
from kinoray.control.lookup import find
from kinoray.control.requests import RequestModel
from kinoray.control.views import View
from kinoray.errors import AnomalyDetectorUnavailableError, InvalidParametersError, KinorayError
from kinoray.store import scoping
from kinoray.store.models import AlertRule, DataIncident, new_id, utcnow
from kinoray.telemetry import ALERT_EVALUATIONS, INCIDENT_TRANSITIONS

if TYPE_CHECKING:
    from kinoray.analytics.anomaly import Finding, ViewTable
    from kinoray.control.platform import Platform

__all__ = ["INCIDENT_OPENED", "INCIDENT_CLOSED", "AlertRuleCreate", "AlertRuleUpdate", "AlertRuleView",
           "IncidentBreakdownView", "IncidentNotificationRuleView", "IncidentNotificationView", "IncidentView", "Scorer", "create_rule", "delete_rule", "evaluate_alerts",
           "get_incident", "get_rule", "incident_view", "list_incidents", "list_rules", "local_scorer",
           "open_incident_counts", "related_incidents", "rule_view", "update_rule"]

log = logging.getLogger(__name__)

INCIDENT_OPENED = "video.data.incident.opened"
INCIDENT_CLOSED = "video.data.incident.closed"
Comparison = Literal["gt", "gte", "lt", "lte"]
Severity = Literal["warning", "alert"]
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
_SYMBOL = {"gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}
#: A dimension the Data API knows, and a ``filters[]`` entry over one (the OpenAPI document carries both).
DIMENSION_PATTERN = rf"^({'|'.join(DIMENSIONS)})$"
FILTER_PATTERN = rf"^!?({'|'.join(DIMENSIONS)}):.*$"
#: ``scorer(table, metrics=..., dimensions=..., end_ms=..., explain_from_ms=..., min_views=...)`` → findings.
Scorer = Callable[..., "list[Finding]"]


def local_scorer(table: ViewTable, **options: Any) -> list[Finding]:
    """The detector in this process (tests, a runner without Serve)."""
    from kinoray.analytics.anomaly import detect

    return detect(table, **options)


# --- the resources ------------------------------------------------------------------------------------------
class AlertRuleCreate(RequestModel):
    """``POST /data/v1/alerts``."""

    name: str = Field(min_length=1, max_length=255)
    kind: Literal["threshold", "anomaly"] = "threshold"
    metric: str = Field(min_length=1, max_length=64, description="a Data API metric id; anomaly rules: "
                        "rebuffer_percentage, playback_failure_percentage, video_startup_time or "
                        "exits_before_video_start")
    measurement: Literal["avg", "median", "95th", "sum", "count"] | None = Field(
        default=None, description="threshold rules: the aggregation (default: the metric's, as the Data API)")
    filters: list[Annotated[str, Field(pattern=FILTER_PATTERN, max_length=512)]] = Field(
        default_factory=list, max_length=32, description="filters[] of the Data API: dimension:value, "
                                                         "!dimension:value")
    comparison: Comparison | None = Field(default=None, description="threshold rules: gt, gte, lt, lte")
    threshold: float | None = Field(default=None, description="threshold rules: the value compared with (the "
                                    "metric's own unit: fractions for percentages, ms for times)")
    window_seconds: int = Field(default=300, ge=60, le=86_400,
                                description="threshold rules: the metric over this many last seconds")
    min_views: int | None = Field(default=None, ge=1, le=1_000_000,
                                  description="threshold rules: fewer views in the window never fire (default 10); "
                                              "anomaly rules: fewer views in a 5-minute bucket are not judged "
                                              "(default 5)")
    dimensions: list[Annotated[str, Field(pattern=DIMENSION_PATTERN)]] | None = Field(
        default=None, max_length=8, description="anomaly rules: dimensions "
                                         "searched for the values that explain a degradation (default: country, "
                                         "asn, browser, cdn)")
    severity: Severity = "alert"
    enabled: bool = True

    @model_validator(mode="after")
    def _coherent(self) -> AlertRuleCreate:
        _check(self.kind, self.metric, self.filters, self.comparison, self.threshold, self.dimensions,
               self.measurement)
        return self


class AlertRuleUpdate(RequestModel):
    """``PATCH /data/v1/alerts/{id}``: fields left out stay as they are (the kind cannot change)."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    metric: str | None = Field(default=None, min_length=1, max_length=64)
    measurement: Literal["avg", "median", "95th", "sum", "count"] | None = None
    filters: list[Annotated[str, Field(pattern=FILTER_PATTERN, max_length=512)]] | None = Field(
        default=None, max_length=32)
    comparison: Comparison | None = None
    threshold: float | None = None
    window_seconds: int | None = Field(default=None, ge=60, le=86_400)
    min_views: int | None = Field(default=None, ge=1, le=1_000_000)
    dimensions: list[Annotated[str, Field(pattern=DIMENSION_PATTERN)]] | None = Field(default=None, max_length=8)
    severity: Severity | None = None
    enabled: bool | None = None


def _check(kind: str, metric: str, filters: Sequence[str], comparison: str | None, threshold: float | None,
           dimensions: Sequence[str] | None, measurement: str | None) -> None:
    from kinoray.analytics import DIMENSIONS, METRICS, parse_filters
    from kinoray.analytics.anomaly import DETECTED_METRICS

    parse_filters(list(filters))
    if kind == "threshold":
        if metric not in METRICS:
            raise InvalidParametersError(f"metric: unknown metric {metric[:64]!r}")
        if comparison is None or threshold is None or not math.isfinite(threshold):
            raise InvalidParametersError("a threshold rule needs comparison and a finite threshold")
        if dimensions:
            raise InvalidParametersError("dimensions: only anomaly rules search dimensions")
    else:
        if metric not in DETECTED_METRICS:
            raise InvalidParametersError(f"metric: anomaly rules watch one of {', '.join(DETECTED_METRICS)}")
        if comparison is not None or threshold is not None or measurement is not None:
            raise InvalidParametersError("comparison, threshold and measurement are for threshold rules")
        for name in dimensions or ():
            if name not in DIMENSIONS:
                raise InvalidParametersError(f"dimensions: unknown dimension {name[:64]!r}")


class AlertRuleView(View):
    """An alert rule (kinoray's resource: every field shown). ``status``: ``ok``, ``firing`` (open incidents),
    ``error`` (the last evaluation failed: ``last_error``) or ``pending`` (not evaluated yet)."""

    omit_none = False

    id: str
    name: str
    kind: Literal["threshold", "anomaly"]
    metric: str
    measurement: str | None
    filters: list[str]
    comparison: Comparison | None
    threshold: float | None
    window_seconds: int
    min_views: int
    dimensions: list[str]
    severity: Severity
    enabled: bool
    status: Literal["ok", "firing", "error", "pending"]
    open_incidents: int
    last_evaluated_at: str | None = Field(description="unix seconds")
    last_value: float | None
    last_error: str | None
    created_at: str = Field(description="unix seconds")
    updated_at: str = Field(description="unix seconds")


class IncidentBreakdownView(View):
    id: str
    name: str
    value: str


class IncidentNotificationView(View):
    """Mux's ``IncidentNotification`` (kinoray sends webhooks instead: always an empty list)."""

    id: int
    queued_at: str | None = None
    attempted_at: str | None = None


class IncidentNotificationRuleView(View):
    """Mux's ``IncidentNotificationRule`` (none in kinoray: always an empty list)."""

    id: str
    status: str | None = None
    action: str | None = None
    property_id: str | None = None


class IncidentView(View):
    """An incident in Mux's ``Incident`` shape (``measurement`` is the metric id, as in Mux's examples), with the
    rule that opened it and the detector's baseline in ``kinoray_*`` fields."""

    id: str
    status: Literal["open", "closed"]
    severity: Severity
    description: str
    incident_key: str
    measurement: str
    measured_value: float | None = None
    measured_value_on_close: float | None = None
    threshold: float | None = None
    sample_size: int
    sample_size_unit: str = "views"
    started_at: str
    resolved_at: str | None = None
    breakdowns: list[IncidentBreakdownView]
    notification_rules: list[IncidentNotificationRuleView] = Field(default_factory=list)
    notifications: list[IncidentNotificationView] = Field(default_factory=list)
    affected_views: int | None = Field(default=None, description="estimate: views per hour integrated over the "
                                       "incident's life (null for incidents opened before kinoray measured it)")
    affected_views_per_hour: int | None = Field(default=None, description="at the last evaluation")
    affected_views_per_hour_on_open: int | None = None
    kinoray_rule_id: str
    kinoray_baseline: float | None = None


def _unix(when: datetime | None) -> str | None:
    return None if when is None else str(int(when.timestamp()))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def rule_view(session: Session, rule: AlertRule) -> AlertRuleView:
    from kinoray.analytics.anomaly import DETECTION_DIMENSIONS

    open_count = int(session.scalar(sa.select(sa.func.count()).select_from(DataIncident).where(
        DataIncident.rule_id == rule.id, DataIncident.status == "open")) or 0)
    status: Literal["ok", "firing", "error", "pending"] = (
        "error" if rule.last_error else "firing" if open_count else
        "pending" if rule.last_evaluated_at is None else "ok")
    return AlertRuleView(
        id=rule.id, name=rule.name, kind=rule.kind, metric=rule.metric,  # type: ignore[arg-type]
        measurement=rule.measurement, filters=list(rule.filters or ()),
        comparison=rule.comparison, threshold=rule.threshold,  # type: ignore[arg-type]
        window_seconds=rule.window_seconds, min_views=rule.min_views,
        dimensions=list(rule.dimensions or ()) or (list(DETECTION_DIMENSIONS) if rule.kind == "anomaly" else []),
        severity=rule.severity, enabled=rule.enabled, status=status, open_incidents=open_count,  # type: ignore[arg-type]
        last_evaluated_at=_unix(rule.last_evaluated_at), last_value=_finite(rule.last_value),
        last_error=rule.last_error, created_at=_unix(rule.created_at) or "", updated_at=_unix(rule.updated_at) or "")


def incident_view(incident: DataIncident) -> IncidentView:
    return IncidentView(
        id=incident.id, status=incident.status, severity=incident.severity,  # type: ignore[arg-type]
        description=incident.description, incident_key=incident.incident_key, measurement=incident.metric,
        measured_value=_finite(incident.measured_value), measured_value_on_close=_finite(
            incident.measured_value_on_close), threshold=incident.threshold, sample_size=incident.sample_size,
        started_at=iso_time(incident.started_at),
        resolved_at=iso_time(incident.resolved_at) if incident.resolved_at is not None else None,
        breakdowns=[IncidentBreakdownView(id=f"{name}:{value}", name=name, value=value)
                    for name, value in incident.breakdowns or ()],
        affected_views=None if incident.affected_views is None else round(incident.affected_views),
        affected_views_per_hour=incident.affected_views_per_hour,
        affected_views_per_hour_on_open=incident.affected_views_per_hour_on_open,
        kinoray_rule_id=incident.rule_id, kinoray_baseline=_finite(incident.baseline))


def create_rule(session: Session, body: AlertRuleCreate) -> AlertRule:
    now = utcnow()
    rule = AlertRule(id=new_id(), name=body.name, kind=body.kind, metric=body.metric, measurement=body.measurement,
                     filters=list(body.filters), comparison=body.comparison, threshold=body.threshold,
                     window_seconds=body.window_seconds,
                     min_views=body.min_views or (10 if body.kind == "threshold" else 5),
                     dimensions=list(body.dimensions or ()), severity=body.severity, enabled=body.enabled,
                     created_at=now, updated_at=now)
    session.add(rule)
    session.flush()
    return rule


def get_rule(session: Session, rule_id: str, *, for_update: bool = False) -> AlertRule:
    return find(session, AlertRule, rule_id, what="alert rule", for_update=for_update)


def list_rules(session: Session, *, limit: int, page: int) -> tuple[list[AlertRule], int]:
    total = int(session.scalar(sa.select(sa.func.count()).select_from(AlertRule)) or 0)
    rows = session.scalars(sa.select(AlertRule).order_by(AlertRule.created_at.desc(), AlertRule.id.desc())
                           .limit(limit).offset((page - 1) * limit))
    return list(rows), total


def update_rule(session: Session, rule_id: str, body: AlertRuleUpdate) -> AlertRule:
    rule = get_rule(session, rule_id, for_update=True)
    changes = body.model_dump(exclude_unset=True)
    merged = {name: getattr(rule, name) for name in ("metric", "filters", "comparison", "threshold", "dimensions",
                                                     "measurement")}
    merged.update({k: v for k, v in changes.items() if k in merged})
    _check(rule.kind, merged["metric"], merged["filters"] or [], merged["comparison"], merged["threshold"],
           merged["dimensions"], merged["measurement"])
    for name, value in changes.items():
        if name in ("name", "severity", "enabled", "window_seconds", "min_views") and value is None:
            raise InvalidParametersError(f"{name}: cannot be null")
        setattr(rule, name, list(value) if isinstance(value, list) else value)
    rule.updated_at = utcnow()
    session.flush()
    return rule


def delete_rule(session: Session, rule_id: str) -> None:
    """Delete the rule; its open incidents close first (each emits ``video.data.incident.closed``), then go with
    it."""
    rule = get_rule(session, rule_id, for_update=True)
    now = utcnow()
    for incident in session.scalars(sa.select(DataIncident).where(DataIncident.rule_id == rule.id,
                                                                  DataIncident.status == "open")):
        _close(session, incident, incident.measured_value, now)
    session.delete(rule)
    session.flush()


def get_incident(session: Session, incident_id: str) -> DataIncident:
    return find(session, DataIncident, incident_id, what="incident")


_ORDER = {"started_at": DataIncident.started_at, "resolved_at": DataIncident.resolved_at,
          "measured_value": DataIncident.measured_value, "sample_size": DataIncident.sample_size}


def list_incidents(session: Session, *, limit: int, page: int, status: str | None = None,
                   severity: str | None = None, rule_id: str | None = None, order_by: str = "started_at",
                   descending: bool = True) -> tuple[list[DataIncident], int]:
    where = []
    if status is not None:
        where.append(DataIncident.status == status)
    if severity is not None:
        where.append(DataIncident.severity == severity)
    if rule_id is not None:
        where.append(DataIncident.rule_id == rule_id)
    column = _ORDER[order_by]
    total = int(session.scalar(sa.select(sa.func.count()).select_from(DataIncident).where(*where)) or 0)
    rows = session.scalars(sa.select(DataIncident).where(*where)
                           .order_by(column.desc() if descending else column.asc(), DataIncident.id)
                           .limit(limit).offset((page - 1) * limit))
    return list(rows), total


#: How far apart in time two incidents may be and still be related (:func:`related_incidents`).
RELATED_MARGIN = timedelta(minutes=30)


def _related(one: DataIncident, other: DataIncident) -> bool:
    """Two incidents are related when they share a dimension value, or one of them is about all views (so it
    covers the other's): their causes may be the same."""
    mine, theirs = ({tuple(pair) for pair in incident.breakdowns or ()} for incident in (one, other))
    return not mine or not theirs or bool(mine & theirs)


def related_incidents(session: Session, incident_id: str, *, limit: int, page: int, order_by: str = "started_at",
                      descending: bool = True, now: datetime | None = None) -> tuple[list[DataIncident], int]:
    """The other incidents (any rule) that overlap ``incident_id``'s time (open to resolved, widened by
    :data:`RELATED_MARGIN`; an open one runs to ``now``) and are :func:`_related` to it: Mux's "related
    incidents". Ordered like :func:`list_incidents`; ``404`` for an unknown id."""
    incident = get_incident(session, incident_id)
    now = now or utcnow()
    start = incident.started_at - RELATED_MARGIN
    end = (incident.resolved_at or now) + RELATED_MARGIN
    column = _ORDER[order_by]
    candidates = session.scalars(
        sa.select(DataIncident).where(DataIncident.id != incident.id, DataIncident.started_at <= end,
                                      sa.or_(DataIncident.resolved_at.is_(None), DataIncident.resolved_at >= start))
        .order_by(column.desc() if descending else column.asc(), DataIncident.id))
    found = [other for other in candidates if _related(incident, other)]
    return found[(page - 1) * limit:page * limit], len(found)


def open_incident_counts(session: Session) -> dict[tuple[str, str], int]:
    """Open incidents per (rule id, rule name), every rule listed (zero included)."""
    counts = {(rule_id, name): 0 for rule_id, name in session.execute(sa.select(AlertRule.id, AlertRule.name))}
    query = (sa.select(AlertRule.id, AlertRule.name, sa.func.count()).join(DataIncident)
             .where(DataIncident.status == "open").group_by(AlertRule.id, AlertRule.name))
    for rule_id, name, count in session.execute(query):
        counts[(rule_id, name)] = int(count)
    return counts


# --- evaluation ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Firing:
    """One key a rule is firing for now."""

    breakdowns: tuple[tuple[str, str], ...]
    description: str
    value: float | None
    baseline: float | None
    views: int
    started_at: datetime
    views_per_hour: float  # the views it covers, per hour (the window's or the alarming buckets' views, scaled)


@dataclass(frozen=True)
class _Rule:
    id: str
    name: str
    kind: str
    metric: str
    measurement: str | None
    filters: tuple[str, ...]
    comparison: str | None
    threshold: float | None
    window_seconds: int
    min_views: int
    dimensions: tuple[str, ...]


def _filters_label(filters: Sequence[str]) -> str:
    return ", ".join(filters) or "all views"


def _threshold(platform: Platform, rule: _Rule, now: datetime) -> tuple[float | None, dict[str, _Firing]]:
    from kinoray.analytics import METRICS, parse_filters
    from kinoray.analytics.query import Query, Timeframe
    from kinoray.control.analytics import event_store

    query = Query(event_store(platform), Timeframe(now - timedelta(seconds=rule.window_seconds), now),
                  parse_filters(list(rule.filters)), now=now)
    overall = query.overall(rule.metric, rule.measurement)
    value, views = overall["value"], int(overall["total_views"])
    assert rule.comparison is not None and rule.threshold is not None
    if value is None or views < rule.min_views or not _COMPARE[rule.comparison](value, rule.threshold):
        return value, {}
    measurement = rule.measurement or METRICS[rule.metric].measurement
    description = (f"{rule.metric} ({measurement}) is {value:.4g} {_SYMBOL[rule.comparison]} {rule.threshold:g} over "
                   f"the last {rule.window_seconds} s on {_filters_label(rule.filters)} ({views} views)")
    breakdowns = tuple((f.removeprefix("!").partition(":")[0], f.partition(":")[2]) for f in rule.filters
                       if not f.startswith("!"))
    return value, {"all": _Firing(breakdowns, description, value, None, views, now,
                                  views * 3600 / rule.window_seconds)}


def _anomaly(platform: Platform, rule: _Rule, now: datetime, scorer: Scorer) -> tuple[float | None, dict[str, _Firing]]:
    from datetime import UTC

    from kinoray.analytics import parse_filters
    from kinoray.analytics.anomaly import BUCKET_SECONDS, DETECTION_DIMENSIONS, ViewTable
    from kinoray.analytics.query import Query, Timeframe
    from kinoray.control.analytics import event_store

    history = timedelta(hours=platform.settings.analytics.anomaly_history_hours)
    query = Query(event_store(platform), Timeframe(now - history, now), parse_filters(list(rule.filters)), now=now)
    dimensions = rule.dimensions or DETECTION_DIMENSIONS
    table = ViewTable.from_views(query.views, dimensions)
    now_ms = int(now.timestamp() * 1000)
    findings = scorer(table, metrics=(rule.metric,), dimensions=tuple(dimensions), end_ms=now_ms,
                      start_ms=now_ms - int(history.total_seconds() * 1000),
                      explain_from_ms=now_ms - 6 * BUCKET_SECONDS * 1000, min_views=rule.min_views)
    firing: dict[str, _Firing] = {}
    for finding in findings:
        if finding.active:
            hours = max(finding.last_ms - finding.started_ms, BUCKET_SECONDS * 1000) / 3_600_000
            firing[finding.key] = _Firing(
                tuple(finding.where), finding.describe(), _finite(finding.value), _finite(finding.baseline),
                finding.views, datetime.fromtimestamp(finding.started_ms / 1000, UTC), finding.views / hours)
    worst = max((f.value for f in firing.values() if f.value is not None), default=None)
    return worst, firing


def _open(session: Session, rule: AlertRule, key: str, firing: _Firing, now: datetime) -> DataIncident:
    rate = round(firing.views_per_hour)
    incident = DataIncident(
        id=new_id(), rule_id=rule.id, incident_key=key[:512], status="open", severity=rule.severity,
        metric=rule.metric, measurement=rule.measurement or "", breakdowns=[list(pair) for pair in firing.breakdowns],
        description=firing.description, threshold=rule.threshold, baseline=firing.baseline,
        measured_value=firing.value, sample_size=firing.views, started_at=firing.started_at, updated_at=now,
        affected_views_per_hour_on_open=rate, affected_views_per_hour=rate, affected_views=float(firing.views))
    session.add(incident)
    session.flush()
    emit(session, INCIDENT_OPENED, "incident", incident.id, incident_view(incident))
    INCIDENT_TRANSITIONS.labels(transition="opened").inc()
    log.warning("incident opened", extra={"rule": rule.id, "incident": incident.id, "description": firing.description})
    return incident


def _close(session: Session, incident: DataIncident, value: float | None, now: datetime) -> None:
    incident.status = "closed"
    incident.resolved_at = now
    incident.measured_value_on_close = value
    incident.updated_at = now
    session.flush()
    emit(session, INCIDENT_CLOSED, "incident", incident.id, incident_view(incident))
    INCIDENT_TRANSITIONS.labels(transition="closed").inc()
    log.info("incident closed", extra={"rule": incident.rule_id, "incident": incident.id})


def _apply(platform: Platform, rule_id: str, value: float | None, firing: dict[str, _Firing], now: datetime) -> None:
    with platform.db.session() as session:
        try:
            rule = get_rule(session, rule_id, for_update=True)  # runners sharing a database take turns
        except KinorayError:
            return  # deleted meanwhile
        open_ = {incident.incident_key: incident for incident in session.scalars(
            sa.select(DataIncident).where(DataIncident.rule_id == rule.id, DataIncident.status == "open"))}
        for key, found in firing.items():
            incident = open_.get(key[:512])
            if incident is None:
                _open(session, rule, key, found, now)
            else:
                elapsed = max((now - incident.updated_at).total_seconds(), 0.0) / 3600
                incident.affected_views = (incident.affected_views or 0.0) + found.views_per_hour * elapsed
                incident.affected_views_per_hour = round(found.views_per_hour)
                incident.measured_value, incident.sample_size = found.value, found.views
                incident.description, incident.updated_at = found.description, now
        for key, incident in open_.items():
            if key not in {k[:512] for k in firing}:
                current = value if rule.kind == "threshold" else None
                _close(session, incident, current, now)
        rule.last_evaluated_at, rule.last_value, rule.last_error = now, _finite(value), None


def _record_error(platform: Platform, rule_id: str, message: str, now: datetime) -> None:
    with platform.db.session() as session:
        rule = session.get(AlertRule, rule_id)
        if rule is not None:
            rule.last_evaluated_at, rule.last_error = now, message[:2000]


def evaluate_alerts(platform: Platform, scorer: Scorer | None = None, now: datetime | None = None) -> dict[str, int]:
    """Evaluate every enabled rule at ``now`` (default: the wall clock); open and close their incidents. A rule
    that cannot be evaluated records why (``last_error``) and keeps its incidents. Returns counts by outcome
    (``ok``, ``unavailable``, ``failed``)."""
    now = now or utcnow()
    scorer = scorer or local_scorer
    with platform.db.reader() as session:
        rules = [(_Rule(r.id, r.name, r.kind, r.metric, r.measurement, tuple(r.filters or ()), r.comparison,
                        r.threshold, r.window_seconds, r.min_views, tuple(r.dimensions or ())), r.environment_id)
                 for r in session.scalars(sa.select(AlertRule).where(AlertRule.enabled.is_(True)))]
        # each rule watches its own environment's views, and its incidents' events go to that environment's hooks
        scopes = {env: environments.data_filters(session, env) for env in {env for _, env in rules}}
    outcomes = {"ok": 0, "unavailable": 0, "failed": 0}
    for rule, environment_id in rules:
        try:
            with scoping.scoped(environment_id, scopes[environment_id]):
                if rule.kind == "threshold":
                    value, firing = _threshold(platform, rule, now)
                else:
                    value, firing = _anomaly(platform, rule, now, scorer)
                _apply(platform, rule.id, value, firing, now)
            outcome = "ok"
        except AnomalyDetectorUnavailableError as error:
            log.warning("anomaly detector unavailable: rule not evaluated", extra={"rule": rule.id, "error": str(error)})
            _record_error(platform, rule.id, f"{error.type}: {error}", now)
            outcome = "unavailable"
        except Exception as error:  # noqa: BLE001 - one broken rule must not stop the others
            log.exception("alert rule evaluation failed", extra={"rule": rule.id})
            _record_error(platform, rule.id, f"{type(error).__name__}: {str(error)[:500]}", now)
            outcome = "failed"
        outcomes[outcome] += 1
        ALERT_EVALUATIONS.labels(kind=rule.kind, outcome=outcome).inc()
    return outcomes
