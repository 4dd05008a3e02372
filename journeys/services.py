"""The journey lifecycle: save a draft, publish it, activate, pause, archive, delete.

One home for each change of a journey's state, whatever the door (the admin builder,
``/api/v1/journeys``, imports, the demo): each validates through
``journeys.definition``, keeps the recurring beat entry in step (``schedules``) and
wakes the engine and the trigger's sweep on commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from journeys.definition import definition_of, normalized, validate
from journeys.models import Enrollment, Journey, JourneyVersion, Step
from journeys.problems import DefinitionInvalid
from journeys.triggers import registry, schedules
from orchestrator.consent.models import Topic
from orchestrator.core.tasking import publish_on_commit


@transaction.atomic
def journey_save(
    definition: Mapping[str, Any],
    *,
    key: str | None = None,
    by: Any = None,
    via: str = "",
) -> Journey:
    """Create or replace a journey's draft from a definition; publish it if active.

    Raises DefinitionInvalid with every problem. ``key`` (from a URL) wins over the body's.
    ``by`` (an admin user) or ``via`` (e.g. ``API key ci``) is who publishes, if it does.
    """
    if key is not None and isinstance(definition, Mapping):
        definition = {**definition, "key": key}
    problems = validate(definition)
    if problems:
        raise DefinitionInvalid(problems)
    d = normalized(definition)
    topic = Topic.objects.get(key=d["topic"])
    trigger = dict(d["trigger"])
    kind = trigger.pop("kind")
    journey = Journey.objects.select_for_update().filter(key=d["key"]).first()
    fields = {
        "name": d["name"],
        "customer_name": d["customer_name"],
        "customer_names": d["customer_names"],
        "description": d["description"],
        "topic": topic,
        "priority": d["priority"],
        "entry": d["entry"]["rule"],
        "entry_days": d["entry"]["days"],
        "trigger_kind": kind,
        "trigger": trigger,
        "exit_events": d["exit_events"],
        "goal_event": d["goal"]["event"] if d["goal"] else "",
        "goal_within_hours": d["goal"]["within_hours"] if d["goal"] else None,
        "goal_exits": d["goal"]["exits"] if d["goal"] else True,
        "on_hold": d["on_hold"],
    }
    if journey is None:
        journey = Journey.objects.create(key=d["key"], **fields)
    else:
        for name, value in fields.items():
            setattr(journey, name, value)
        journey.save()
        journey.steps.all().delete()
    Step.objects.bulk_create(
        Step(
            journey=journey,
            key=s["key"],
            position=i,
            kind=s["kind"],
            label=s["label"],
            next=s["next"],
            alt_next=s["alt_next"],
            config=s["config"],
        )
        for i, s in enumerate(d["steps"])
    )
    if journey.status in (Journey.Status.ACTIVE, Journey.Status.PAUSED):
        journey_publish(journey=journey, by=by, via=via)
        schedules.sync_schedule(journey)  # a changed cron or trigger kind reaches beat
    return journey


def journey_publish(*, journey: Journey, by: Any = None, via: str = "") -> JourneyVersion:
    """Publish the draft as a new version unless it equals the current one.

    Running enrollments stay on the version they started; new ones take this one. The
    version records who published it: ``by`` an admin user, else ``via`` (an API key's
    name, "import"...); neither for the system.
    """
    definition = definition_of(journey)
    problems = validate(definition)
    if problems:
        raise DefinitionInvalid(problems)
    definition = normalized(definition)
    current = journey.current_version
    if current is not None and current.definition == definition:
        return current
    number = (current.number if current else 0) + 1
    latest = journey.versions.order_by("-number").values_list("number", flat=True).first()
    number = max(number, (latest or 0) + 1)
    version = JourneyVersion.objects.create(
        journey=journey,
        number=number,
        definition=definition,
        published_by=by if getattr(by, "is_authenticated", False) else None,
        published_via=via[:200],
    )
    journey.current_version = version
    journey.save(update_fields=["current_version", "updated_at"])
    return version


@transaction.atomic
def journey_activate(*, journey: Journey, by: Any = None, via: str = "") -> JourneyVersion:
    """Validate, publish and start the journey (or resume a paused one)."""
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    version = journey_publish(journey=journey, by=by, via=via)
    journey.status = Journey.Status.ACTIVE
    journey.save(update_fields=["status", "updated_at"])
    schedules.sync_schedule(journey)
    publish_on_commit("journeys.tick")
    # Sweep at once rather than at the next beat: whoever is already due is reached now.
    kind = registry.get(journey.trigger_kind)
    if kind is not None and kind.sweep is not None:
        publish_on_commit(kind.SWEEP_TASK, expires=60)
    return version


@transaction.atomic
def journey_pause(*, journey: Journey) -> None:
    """Hold the journey: nobody enters and running enrollments wait where they are."""
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    if journey.status != Journey.Status.ACTIVE:
        return
    journey.status = Journey.Status.PAUSED
    journey.save(update_fields=["status", "updated_at"])
    schedules.sync_schedule(journey)


@transaction.atomic
def journey_archive(*, journey: Journey) -> None:
    """Retire the journey: nobody enters it again and its beat task is switched off.

    An active journey is paused first. Enrollments stay where they are; the engine
    only moves customers on active journeys, so they wait unless it is activated again.
    """
    current = Journey.objects.select_for_update().get(pk=journey.pk)
    if current.status == Journey.Status.ACTIVE:
        journey_pause(journey=current)
    Journey.objects.filter(pk=journey.pk).update(
        status=Journey.Status.ARCHIVED, updated_at=timezone.now()
    )
    journey.refresh_from_db(fields=["status", "updated_at"])
    schedules.sync_schedule(journey)


@transaction.atomic
def journey_delete(*, journey: Journey) -> bool:
    """Delete a journey nobody has entered; archive one with enrollments instead.

    Enrollments are the record of who got what (and the engine's dedupe of entries), so
    they are kept: the journey is archived, nobody enters it any more and those still
    on it stay where they are. Returns True when deleted.
    """
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    if Enrollment.objects.filter(journey=journey).exists():
        journey_archive(journey=journey)
        return False
    if journey.status == Journey.Status.ACTIVE:
        journey_pause(journey=journey)  # takes it off the schedules
    # current_version protects the versions; clear it so they go with the journey.
    Journey.objects.filter(pk=journey.pk).update(current_version=None)
    journey.delete()
    return True
