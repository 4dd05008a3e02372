"""/api/v1/journeys/{key}/analytics and /api/v1/channels/health: the admin's figures as JSON.

Both read the daily rollups (``orchestrator.analytics``), take an inclusive date range
``?from=YYYY-MM-DD&to=YYYY-MM-DD`` (the last 30 days by default, at most 400 days)
counted in ``ANALYTICS_TIME_ZONE``, and answer a bad range with a 400 naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator.analytics.rollups import analytics_catch_up
from orchestrator.analytics.selectors import (
    BOUNCE_THRESHOLDS,
    COMPLAINT_THRESHOLDS,
    DELIVERY_THRESHOLDS,
    ChannelReport,
    JourneyAnalytics,
    RangeInvalid,
    channel_health,
    date_range,
    journey_analytics,
)
from orchestrator.api.errors import ApiError
from orchestrator.api.journeys import _KEY, _journey
from orchestrator.api.views import ApiView, _errors

_RANGE = [
    OpenApiParameter(
        "from", OpenApiTypes.DATE, description="First day (inclusive); default 29 days before to."
    ),
    OpenApiParameter("to", OpenApiTypes.DATE, description="Last day (inclusive); default today."),
]


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _range(request: Request):
    unknown = sorted(set(request.query_params) - {"from", "to"})
    if unknown:
        # The schema names only from and to: a misspelt "form=" must not silently
        # answer for the default range.
        message = f"Unknown parameter: {unknown[0][:40]!r}; this takes only from and to."
        raise ApiError(
            code="unknown_parameter",
            message=message,
            fields={name[:40]: ["Not a parameter of this operation."] for name in unknown[:10]},
        )
    params = {name: request.query_params.get(name) for name in ("from", "to")}
    for name, value in params.items():
        # As the schema says (format: date): YYYY-MM-DD; given empty is not left out.
        if value is not None and not _DATE.match(value):
            message = f"{name}: expected a date as YYYY-MM-DD, got {value[:40]!r}."
            raise ApiError(code="invalid_range", message=message, fields={name: [message]})
    try:
        return date_range(params["from"], params["to"])
    except RangeInvalid as exc:
        field = "to" if str(exc).startswith("to") else "from"
        raise ApiError(
            code="invalid_range", message=str(exc), status_code=400, fields={field: [str(exc)]}
        ) from None


def _journey_body(a: JourneyAnalytics) -> dict[str, Any]:
    return {
        "journey": a.journey.key,
        "from": a.start.isoformat(),
        "to": a.end.isoformat(),
        "totals": {
            "enrolled": a.enrolled,
            "waiting": a.waiting,
            "sent": a.sent,
            "delivered": a.delivered,
            "opened": a.opened,
            "clicked": a.clicked,
            "converted": a.converted,
            "exited": a.exited,
            "click_rate": a.click_rate,
            "conversion_rate": a.conversion_rate,
        },
        "steps": [
            {
                "key": s.key,
                "kind": s.kind,
                "in_published_version": not s.removed,
                "entered": s.entered,
                "waiting": s.waiting,
                "sent": s.sent,
                "delivered": s.delivered,
                "opened": s.opened,
                "clicked": s.clicked,
                "converted": s.converted,
                "exited": s.exited,
                "held": s.held,
                "click_rate": s.click_rate,
            }
            for s in a.steps
        ],
        "splits": [
            {
                "step": split.step,
                "arms": [
                    {
                        "arm": arm.arm,
                        "entered": arm.entered,
                        "sent": arm.sent,
                        "clicked": arm.clicked,
                        "converted": arm.converted,
                        "conversion_rate": arm.conversion_rate,
                        "click_rate": arm.click_rate,
                    }
                    for arm in split.arms
                ],
                "comparisons": [
                    {
                        "baseline": c.baseline,
                        "arm": c.arm,
                        "lift": c.lift,
                        "p_value": c.p_value,
                        "significant": c.significant,
                        "verdict": c.verdict,
                    }
                    for c in split.comparisons
                ],
            }
            for split in a.splits
        ],
        "holds": [
            {"outcome": h.kind, "reason": h.group, "code": h.code, "count": h.count}
            for h in a.holds
        ],
        "days": [
            {
                "day": d.day.isoformat(),
                "enrolled": d.enrolled,
                "sent": d.sent,
                "clicked": d.clicked,
                "converted": d.converted,
            }
            for d in a.days
        ],
    }


def _rate(value: float | None, level: str, thresholds: tuple[float, float]) -> dict[str, Any]:
    return {"value": value, "level": level, "warn": thresholds[0], "bad": thresholds[1]}


def _health_body(report: ChannelReport) -> dict[str, Any]:
    return {
        "from": report.start.isoformat(),
        "to": report.end.isoformat(),
        "channels": [
            {
                "channel": r.channel,
                "provider": r.provider,
                "sent": r.sent,
                "delivered": r.delivered,
                "opened": r.opened,
                "clicked": r.clicked,
                "bounced": r.bounced,
                "complained": r.complained,
                "failed": r.failed,
                "undelivered": r.undelivered,
                # null with level "none" when the provider reported no delivery outcome
                "delivery": _rate(r.delivery_rate, r.delivery_level, DELIVERY_THRESHOLDS),
                "reports_delivery": r.reports_delivery,
                "bounce": _rate(r.bounce_rate, r.bounce_level, BOUNCE_THRESHOLDS),
                "complaint": _rate(r.complaint_rate, r.complaint_level, COMPLAINT_THRESHOLDS),
                "failures": [{"code": code, "count": n} for code, n in r.top_failures],
                "latency": {
                    "delivered": r.latency_count,
                    "mean_seconds": r.latency_mean_seconds,
                    "p50": r.latency_p50,
                    "p95": r.latency_p95,
                    "buckets": r.latency,
                },
            }
            for r in report.rows
        ],
        "holds": [{"channel": c, "code": code, "count": n} for c, code, n in report.holds],
        "days": [
            {"day": d.day.isoformat(), "sent": d.sent, "delivered": d.delivered, "failed": d.failed}
            for d in report.days
        ],
    }


class JourneyAnalyticsView(ApiView):
    required_scopes = ["read"]

    @extend_schema(
        operation_id="journeys_analytics",
        tags=["journeys"],
        summary="Per step entered / waiting / sent / delivered / clicked / converted / "
        "exited, A/B arms with a significance verdict, holds by reason, and a daily "
        "series, over a date range.",
        parameters=[_KEY, *_RANGE],
        responses={200: OpenApiTypes.OBJECT, **_errors(400, 401, 403, 404)},
    )
    def get(self, request: Request, key: str) -> Response:
        journey = _journey(key)
        start, end = _range(request)
        analytics_catch_up()
        return Response(_journey_body(journey_analytics(journey, start, end)))


class ChannelHealthView(ApiView):
    required_scopes = ["read"]

    @extend_schema(
        operation_id="channels_health",
        tags=["channels"],
        summary="Per channel and provider: delivery, bounce and complaint rates against "
        "their thresholds, failures by provider error, latency to delivery.",
        parameters=_RANGE,
        responses={200: OpenApiTypes.OBJECT, **_errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        start, end = _range(request)
        analytics_catch_up()
        return Response(_health_body(channel_health(start, end)))
