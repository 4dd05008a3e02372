"""Stored journeys whose send step carried ``config.digest`` become digest steps, in
the draft and in every published version, and the migration can go back."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from journeys.definition import definition_of, validate
from journeys.models import JourneyVersion, Step
from tests.delivery.factories import make_template, make_topic
from tests.journeys.conftest import make_journey, send

pytestmark = pytest.mark.django_db

migration = importlib.import_module("journeys.migrations.0005_digest_step")

OLD = {
    "template": "order-digest",
    "channel": "email",
    "ttl_hours": 48,
    "digest": {"window_minutes": 30, "count": 5, "key": "order_id"},
}
NEW = {
    "template": "order-digest",
    "channel": "email",
    "ttl_hours": 48,
    "window_minutes": 30,
    "count": 5,
    "key": "order_id",
}


@pytest.fixture
def journey():
    topic = make_topic("journey-news")
    make_template("order-digest", topic=topic)
    make_template("journey-hello", topic=topic)
    journey = make_journey(
        [send("updates", template="order-digest", next="thanks"), send("thanks")]
    )
    # As stored before the digest was a step of its own.
    Step.objects.filter(journey=journey, key="updates").update(config=OLD)
    version = JourneyVersion.objects.get(pk=journey.current_version_id)
    version.definition["steps"][0]["config"] = OLD
    JourneyVersion.objects.filter(pk=version.pk).update(definition=version.definition)
    return journey


def test_old_digest_send_steps_become_digest_steps_in_draft_and_versions(journey):
    migration.forwards(apps, None)

    step = Step.objects.get(journey=journey, key="updates")
    assert (step.kind, step.config) == ("digest", NEW)
    assert Step.objects.get(journey=journey, key="thanks").kind == "send"
    version = JourneyVersion.objects.get(pk=journey.current_version_id)
    assert version.definition["steps"][0]["kind"] == "digest"
    assert version.definition["steps"][0]["config"] == NEW
    assert version.definition["steps"][1]["kind"] == "send"
    assert validate(definition_of(journey)) == []


def test_the_migration_goes_back_to_the_send_step_form(journey):
    migration.forwards(apps, None)
    migration.backwards(apps, None)

    step = Step.objects.get(journey=journey, key="updates")
    assert (step.kind, step.config) == ("send", OLD)
    version = JourneyVersion.objects.get(pk=journey.current_version_id)
    assert version.definition["steps"][0] == {**version.definition["steps"][0], "config": OLD}
    assert version.definition["steps"][0]["kind"] == "send"
