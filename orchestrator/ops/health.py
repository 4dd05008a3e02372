"""What ``/healthz`` reports: can the database answer, is the broker up, is beat running.

Each check returns a JSON-ready dict with ``ok`` (True, False, or None when there is
nothing to judge yet) and never raises: a probe must answer even when a dependency is gone.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

logger = logging.getLogger(__name__)

#: Seconds the broker check may take; a health probe must answer fast even when Redis is gone.
BROKER_TIMEOUT = 1.0

#: The beat entry whose last run tells whether anything is being sent at all.
BEAT_DISPATCH_ENTRY = "dispatch-due-messages"
#: django-celery-beat writes ``last_run_at`` to the database only when it syncs: at the
#: first task it sends once three minutes (celery's ``Scheduler.sync_every``) have passed
#: since the last sync, so a healthy beat's row can be that old plus one dispatch interval.
BEAT_SYNC_EVERY = dt.timedelta(minutes=3)
#: Slack on top of that before beat counts as stale: three dispatch intervals, at least a
#: minute (a slow tick or a busy database must not make a healthy beat look stopped).
BEAT_MIN_SLACK = dt.timedelta(minutes=1)


def check_database() -> dict[str, object]:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        logger.warning("healthz: database check failed: %s", exc)
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}


def check_broker() -> dict[str, object]:
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


def beat_stale_after() -> dt.timedelta:
    """Age of the dispatch entry's ``last_run_at`` above which beat counts as stopped."""
    interval = dt.timedelta(seconds=settings.DISPATCH_INTERVAL_SECONDS)
    return BEAT_SYNC_EVERY + max(3 * interval, BEAT_MIN_SLACK)


def check_beat() -> dict[str, object]:
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


def health() -> tuple[bool, dict[str, object]]:
    """Whether the database answers, and the whole report.

    "degraded" when the broker is down or beat has stopped running the dispatcher: work
    waits in the outbox and goes out once they are back, and restarting the web process
    would not fix either, so a load balancer must keep routing to it.
    """
    database = check_database()
    broker = check_broker()
    beat = check_beat() if database["ok"] else {"ok": None, "state": "unknown"}
    healthy = database["ok"] and broker["ok"] and beat["ok"] is not False
    report = {
        "status": "ok" if healthy else "degraded",
        "checks": {"database": database, "broker": broker, "beat": beat},
    }
    return bool(database["ok"]), report
