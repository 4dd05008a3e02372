"""Operational endpoints: ``/healthz`` for load balancers and a landing page for people."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
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


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 while the database answers (the platform can accept work: the outbox is the truth);
    "degraded" when only the broker is down, because beat's sweep sends once it is back."""
    database = _check_database()
    broker = _check_broker()
    status = "ok" if database["ok"] and broker["ok"] else "degraded"
    return JsonResponse(
        {"status": status, "checks": {"database": database, "broker": broker}},
        status=200 if database["ok"] else 503,
    )


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    """A small landing page pointing at the admin, the API docs and the dev inbox."""
    devinbox = any(
        conf["BACKEND"].startswith("channels.adapters.devinbox")
        for conf in settings.CHANNEL_ADAPTERS.values()
    )
    return render(
        request,
        "core/index.html",
        {"brand": settings.BRAND_NAME, "devinbox": devinbox, "debug": settings.DEBUG},
    )
