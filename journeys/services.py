"""The journey lifecycle: save a draft, publish it, activate, pause, archive, delete.

Two kinds of draft: the journey's row and Step rows (what ``PUT /api/v1/journeys/{key}``
and the form write; on an active or paused journey saving them publishes, since the
trigger sweeps read the row), and the canvas's pending draft (``Journey.draft_definition``),
kept apart from what runs, possibly with problems, until it is published or discarded.

One home for each change of a journey's state, whatever the door (the admin builder,
``/api/v1/journeys``, imports, the demo): each validates through
``journeys.definition``, keeps the recurring beat entry in step (``schedules``) and
wakes the engine and the trigger's sweep on commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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
    A pending canvas draft (``draft_definition``) is left as it is: this write wins, and
    the pending draft is then stale (``pending_draft_stale``) until published or discarded.
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


# --- the canvas's pending draft -----------------------------------------------------------


def running_fingerprint(journey: Journey) -> str:
    """A digest of the journey's running definition (row and Step rows)."""
    definition = definition_of(journey)
    with contextlib.suppress(KeyError, AttributeError, TypeError, ValueError):
        definition = normalized(definition)  # else compared as it is
    text = json.dumps(definition, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def pending_draft_stale(journey: Journey) -> bool:
    """The pending draft was saved over a running definition that has changed since."""
    if journey.draft_definition is None:
        return False
    return journey.draft_base != running_fingerprint(journey)


@transaction.atomic
def journey_save_draft(
    *, journey: Journey, definition: Mapping[str, Any], by: Any = None
) -> Journey:
    """Keep ``definition`` as the journey's pending draft, problems and all; nothing that
    runs changes (no version, no trigger settings, no enrollment)."""
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    if journey.draft_definition is None or not journey.draft_base:
        # A draft already pending keeps the base it was started from (so it stays
        # stale after the API changed the journey, until published or discarded).
        journey.draft_base = running_fingerprint(journey)
    journey.draft_definition = {**definition, "key": journey.key}
    journey.draft_saved_at = timezone.now()
    journey.draft_saved_by = by if getattr(by, "is_authenticated", False) else None
    journey.save(
        update_fields=[
            "draft_definition",
            "draft_saved_at",
            "draft_saved_by",
            "draft_base",
            "updated_at",
        ]
    )
    return journey


def _clear_draft(journey: Journey) -> None:
    Journey.objects.filter(pk=journey.pk).update(
        draft_definition=None, draft_saved_at=None, draft_saved_by=None, draft_base=""
    )


@transaction.atomic
def journey_discard_draft(*, journey: Journey) -> None:
    """Drop the pending draft; what runs is untouched."""
    Journey.objects.select_for_update().filter(pk=journey.pk).first()
    _clear_draft(journey)


@transaction.atomic
def journey_publish_draft(*, journey: Journey, by: Any = None, via: str = "") -> JourneyVersion:
    """Publish the pending draft (else the running draft): validate it, apply it to the
    journey's row and steps, publish a version recording ``by``, clear the draft.

    Raises DefinitionInvalid with every problem; nothing changes then.
    """
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    pending = journey.draft_definition
    if pending is not None:
        definition = {**pending, "key": journey.key}
        problems = validate(definition)
        if problems:
            raise DefinitionInvalid(problems)
        journey = journey_save(definition, key=journey.key, by=by, via=via)
    version = journey_publish(journey=journey, by=by, via=via)
    _clear_draft(journey)
    return version
