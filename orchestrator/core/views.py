"""Operational endpoints: ``/healthz`` for load balancers, ``/metrics`` for Prometheus,
and a landing page for people."""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

#: Seconds the broker check may take; a health probe must answer fast even when Redis is gone.
BROKER_TIMEOUT = 1.0


def _check_database() -> dict[str, object]:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        logger.warning("healthz: database check failed: %s", exc)
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}


def _check_broker() -> dict[str, object]:
    from orchestrator.celery import app as celery_app

    started = time.monotonic()
    try:
        with celery_app.connection_for_write(connect_timeout=BROKER_TIMEOUT) as conn:
            # interval_start=0: one quick retry, never a multi-second back-off inside a probe.
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT)
    except Exception as exc:  # kombu raises transport-specific errors; any of them means down
        logger.warning("healthz: broker check failed: %s", exc)
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}


#: The beat entry whose last run tells whether anything is being sent at all.
BEAT_DISPATCH_ENTRY = "dispatch-due-messages"
#: django-celery-beat writes ``last_run_at`` to the database only when it syncs: at the
#: first task it sends once three minutes (celery's ``Scheduler.sync_every``) have passed
#: since the last sync, so a healthy beat's row can be that old plus one dispatch interval.
BEAT_SYNC_EVERY = dt.timedelta(minutes=3)
#: Slack on top of that before beat counts as stale: three dispatch intervals, at least a
#: minute (a slow tick or a busy database must not make a healthy beat look stopped).
BEAT_MIN_SLACK = dt.timedelta(minutes=1)


def beat_stale_after() -> dt.timedelta:
    """Age of the dispatch entry's ``last_run_at`` above which beat counts as stopped."""
    interval = dt.timedelta(seconds=settings.DISPATCH_INTERVAL_SECONDS)
    return BEAT_SYNC_EVERY + max(3 * interval, BEAT_MIN_SLACK)


def _check_beat() -> dict[str, object]:
    from django_celery_beat.models import PeriodicTask

    stale_after = beat_stale_after()
    try:
        task = PeriodicTask.objects.filter(name=BEAT_DISPATCH_ENTRY).first()
    except DatabaseError as exc:
        logger.warning("healthz: beat check failed: %s", exc)
        return {"ok": False, "error": type(exc).__name__}
    if task is None:
        # Beat creates the row when it first starts: nothing to judge it by yet.
        return {"ok": None, "state": "never_started"}
    last = task.last_run_at or task.date_changed
    age = (timezone.now() - last).total_seconds()
    fresh = age <= stale_after.total_seconds()
    return {
        "ok": fresh,
        "state": "fresh" if fresh else "stale",
        "last_run_at": last.isoformat(),
        "age_seconds": round(age, 1),
        "stale_after_seconds": stale_after.total_seconds(),
    }


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 while the database answers (the platform can accept work: the outbox is the truth);
    "degraded" when the broker is down or beat has stopped running the dispatcher: work
    waits in the outbox and goes out once they are back, and restarting the web process
    would not fix either, so a load balancer must keep routing to it."""
    database = _check_database()
    broker = _check_broker()
    beat = _check_beat() if database["ok"] else {"ok": None, "state": "unknown"}
    healthy = database["ok"] and broker["ok"] and beat["ok"] is not False
    return JsonResponse(
        {
            "status": "ok" if healthy else "degraded",
            "checks": {"database": database, "broker": broker, "beat": beat},
        },
        status=200 if database["ok"] else 503,
    )


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
    from orchestrator.core import metrics as metrics_module

    if not _metrics_allowed(request):
        response = HttpResponse("a valid bearer token is required\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(
        metrics_module.render(), content_type="text/plain; version=0.0.4; charset=utf-8"
    )


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    """A small landing page pointing at the admin, the API docs and the dev inbox."""
    devinbox = any(
        conf["BACKEND"].startswith("channels.devinbox.adapter")
        for conf in settings.CHANNEL_ADAPTERS.values()
    )
    return render(
        request,
        "core/index.html",
        {"brand": settings.BRAND_NAME, "devinbox": devinbox, "debug": settings.DEBUG},
    )
