"""/healthz and beat: fresh, stale (degraded, still 200) and never started."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from orchestrator.ops.health import BEAT_DISPATCH_ENTRY, beat_stale_after

pytestmark = pytest.mark.django_db


def _dispatch_entry(**fields) -> PeriodicTask:
    every, _ = IntervalSchedule.objects.get_or_create(every=2, period=IntervalSchedule.SECONDS)
    return PeriodicTask.objects.create(
        name=BEAT_DISPATCH_ENTRY, task="delivery.dispatch", interval=every, **fields
    )


def _health(client) -> tuple[int, dict]:
    response = client.get("/healthz")
    return response.status_code, response.json()


def test_beat_that_ran_recently_is_fresh(client):
    _dispatch_entry(last_run_at=timezone.now() - dt.timedelta(seconds=30))

    status, body = _health(client)

    assert status == 200
    assert body["status"] == "ok"
    beat = body["checks"]["beat"]
    assert (beat["ok"], beat["state"]) == (True, "fresh")
    assert 29 <= beat["age_seconds"] < 60


def test_a_row_as_old_as_one_beat_sync_period_is_still_fresh(client, settings):
    # django-celery-beat writes last_run_at every three minutes only.
    settings.DISPATCH_INTERVAL_SECONDS = 2
    _dispatch_entry(last_run_at=timezone.now() - dt.timedelta(minutes=3, seconds=10))

    status, body = _health(client)

    assert (status, body["status"], body["checks"]["beat"]["state"]) == (200, "ok", "fresh")


def test_stale_beat_degrades_but_keeps_200(client):
    _dispatch_entry(last_run_at=timezone.now() - dt.timedelta(minutes=10))

    status, body = _health(client)

    assert status == 200  # restarting the web process would not bring beat back
    assert body["status"] == "degraded"
    beat = body["checks"]["beat"]
    assert (beat["ok"], beat["state"]) == (False, "stale")
    assert beat["age_seconds"] >= 600
    assert beat["stale_after_seconds"] == beat_stale_after().total_seconds()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True


def test_staleness_follows_the_dispatch_interval(client, settings):
    settings.DISPATCH_INTERVAL_SECONDS = 60
    _dispatch_entry(last_run_at=timezone.now() - dt.timedelta(minutes=5))

    assert _health(client)[1]["checks"]["beat"]["state"] == "fresh"  # 3 min + 3 x 60 s

    settings.DISPATCH_INTERVAL_SECONDS = 2
    assert _health(client)[1]["checks"]["beat"]["state"] == "stale"  # 3 min + 1 min


def test_a_row_beat_created_but_never_ran_is_judged_by_its_creation(client):
    task = _dispatch_entry(last_run_at=None)
    PeriodicTask.objects.filter(pk=task.pk).update(
        date_changed=timezone.now() - dt.timedelta(hours=1)
    )

    status, body = _health(client)

    assert (status, body["status"], body["checks"]["beat"]["state"]) == (200, "degraded", "stale")


def test_beat_that_never_started_is_reported_without_degrading(client):
    status, body = _health(client)

    assert status == 200
    assert body["status"] == "ok"
    assert body["checks"]["beat"] == {"ok": None, "state": "never_started"}
