"""Fixtures of the canvas endpoints: an editor, a view-only colleague, a journey (the
topic and template fixtures are tests.journeys.conftest's)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from journeys.models import Journey
from journeys.services import journey_save

DEFINITION: dict[str, Any] = {
    "key": "welcome",
    "name": "Welcome",
    "topic": "journey-news",
    "trigger": {"kind": "event", "event": "order.completed"},
    "steps": [
        {
            "key": "hello",
            "kind": "send",
            "next": "pause",
            "config": {"template": "journey-hello", "channel": "email"},
        },
        {
            "key": "pause",
            "kind": "wait",
            "next": "vip",
            "config": {"mode": "duration", "minutes": 2880},
        },
        {
            "key": "vip",
            "kind": "branch",
            "next": "thanks",
            "alt_next": "",
            "config": {
                "conditions": [{"type": "attribute", "name": "vip", "op": "eq", "value": True}]
            },
        },
        {
            "key": "thanks",
            "kind": "send",
            "next": "",
            "config": {"template": "journey-hello", "channel": "sms"},
        },
    ],
}


def definition(**overrides: Any) -> dict[str, Any]:
    return {**copy.deepcopy(DEFINITION), **overrides}


@pytest.fixture
def journey(template) -> Journey:
    return journey_save(definition())


@pytest.fixture
def editor(db):
    return get_user_model().objects.create_superuser(
        "editor", "editor@example.com", "pw-editor-12345", first_name="Eda", last_name="Tor"
    )


@pytest.fixture
def editor_client(editor) -> Client:
    client = Client()
    client.force_login(editor)
    return client


@pytest.fixture
def viewer_client(db) -> Client:
    """A staff member who may look at journeys but not change them."""
    user = get_user_model().objects.create_user("viewer", "viewer@example.com", "pw-view-12345")
    user.is_staff = True
    user.save()
    user.user_permissions.add(Permission.objects.get(codename="view_journey"))
    client = Client()
    client.force_login(user)
    return client


def url(name: str, journey: Journey, **query: str) -> str:
    base = reverse(f"admin:journeys_journey_canvas_{name}", args=[journey.pk])
    if query:
        from urllib.parse import urlencode

        base += "?" + urlencode(query)
    return base


def post(client: Client, name: str, journey: Journey, body: Any):
    return client.post(url(name, journey), body, content_type="application/json")
