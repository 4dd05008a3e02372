"""Operational endpoints: ``/healthz`` for load balancers, ``/metrics`` for Prometheus,
and a landing page for people."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from orchestrator.ops import health
from orchestrator.ops.metrics import render as render_metrics


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 while the database answers (the platform can accept work: the outbox is the
    truth), 503 when it does not; the body says what else is down."""
    database_ok, report = health.health()
    return JsonResponse(report, status=200 if database_ok else 503)


def _metrics_allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # Bytes: compare_digest refuses str with non-ASCII characters (a 500 instead of a 401).
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition; a bearer token is required when METRICS_TOKEN is set."""
    if not _metrics_allowed(request):
        response = HttpResponse("a valid bearer token is required\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(render_metrics(), content_type="text/plain; version=0.0.4; charset=utf-8")


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    """A small landing page pointing at the admin, the API docs and the dev inbox."""
    # By class name: the page links the inbox whichever module the adapter is loaded from.
    devinbox = any(
        conf["BACKEND"].rpartition(".")[2] == "DevInboxAdapter"
        for conf in settings.CHANNEL_ADAPTERS.values()
    )
    return render(
        request,
        "ops/index.html",
        {"brand": settings.BRAND_NAME, "devinbox": devinbox, "debug": settings.DEBUG},
    )
