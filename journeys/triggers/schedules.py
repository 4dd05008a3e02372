"""The beat schedule of recurring journeys: one django-celery-beat PeriodicTask each.

``sync_schedule(journey)`` makes the row match the journey - called on activate and
pause, and reconciled every minute by ``sync_all`` (from the ``sweeps.journey_triggers``
task) so that editing the schedule of a live journey, archiving it or deleting it also
reaches beat. The task is named ``journey:<key>`` and calls ``journeys.fire_recurring``
with the journey's id; it is enabled only while the journey is active and recurring.

With a fixed time zone the crontab *is* the journey's cron, in that zone, so beat fires
on time. With ``"timezone": "customer"`` each customer's local 09:00 is a different
instant, so beat runs the task every ``CUSTOMER_BEAT_MINUTES`` and ``recurring.fire``
enrolls those whose local fire time passed since the previous run.
"""

from __future__ import annotations

import json

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from journeys.models import Journey
from journeys.triggers.recurring import CUSTOMER_BEAT_MINUTES, KIND

TASK = "journeys.fire_recurring"
PREFIX = "journey:"


def task_name(journey: Journey) -> str:
    return f"{PREFIX}{journey.key}"


def _crontab_fields(journey: Journey) -> dict[str, str]:
    config = journey.trigger or {}
    zone = config.get("timezone", "UTC")
    if zone == "customer":
        return {
            "minute": f"*/{CUSTOMER_BEAT_MINUTES}",
            "hour": "*",
            "day_of_month": "*",
            "month_of_year": "*",
            "day_of_week": "*",
            "timezone": "UTC",
        }
    minute, hour, day_of_month, month_of_year, day_of_week = str(config["cron"]).split()
    return {
        "minute": minute,
        "hour": hour,
        "day_of_month": day_of_month,
        "month_of_year": month_of_year,
        "day_of_week": day_of_week,
        "timezone": zone,
    }


@transaction.atomic
def sync_schedule(journey: Journey) -> PeriodicTask | None:
    """Create, update or disable the journey's PeriodicTask; returns it (None if none)."""
    name = task_name(journey)
    task = PeriodicTask.objects.select_for_update().filter(name=name).first()
    wanted = journey.status == Journey.Status.ACTIVE and journey.trigger_kind == KIND
    if not wanted:
        if task is not None and task.enabled:
            task.enabled = False
            task.save()  # save(), not update(): its signal tells beat to reload
        return task
    fields = _crontab_fields(journey)
    crontab = CrontabSchedule.objects.filter(**fields).order_by("id").first()
    if crontab is None:
        crontab = CrontabSchedule.objects.create(**fields)
    args = json.dumps([journey.id])
    if task is None:
        return PeriodicTask.objects.create(
            name=name, task=TASK, crontab=crontab, args=args, enabled=True
        )
    wanted_state = {"task": TASK, "crontab_id": crontab.id, "args": args, "enabled": True}
    if any(getattr(task, attr) != value for attr, value in wanted_state.items()) or (
        task.interval_id or task.solar_id or task.clocked_id
    ):
        for attr, value in wanted_state.items():
            setattr(task, attr, value)
        task.interval = task.solar = task.clocked = None
        task.save()
    return task


def sync_all() -> int:
    """Reconcile every journey schedule with its journey; returns how many were checked.

    Cheap: one query for the recurring journeys, one per journey that has or needs a
    task, and a write only where something differs.
    """
    journeys = {
        j.key: j
        for j in Journey.objects.filter(trigger_kind=KIND)
        | Journey.objects.filter(
            key__in=[
                name.removeprefix(PREFIX)
                for name in PeriodicTask.objects.filter(
                    name__startswith=PREFIX, enabled=True
                ).values_list("name", flat=True)
            ]
        )
    }
    for journey in journeys.values():
        sync_schedule(journey)
    # Tasks of deleted journeys: nothing left to fire.
    orphans = PeriodicTask.objects.filter(name__startswith=PREFIX, enabled=True).exclude(
        name__in=[task_name(j) for j in journeys.values()]
    )
    for task in orphans:
        task.enabled = False
        task.save()
    return len(journeys)
