"""What changed against the published version, in words; and the version history with
who published each version (an admin user, an API key)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from journeys import canvas
from journeys.models import JourneyVersion
from journeys.services import journey_publish, journey_save
from tests.journeys.canvas_api.conftest import definition, post, url

pytestmark = pytest.mark.django_db


def test_a_journey_never_published_shows_every_step_as_added(editor_client, journey):
    data = editor_client.get(url("diff", journey)).json()

    assert data["published_version"] is None
    assert [(c["step"], c["change"]) for c in data["changes"]] == [
        ("hello", "added"),
        ("pause", "added"),
        ("vip", "added"),
        ("thanks", "added"),
    ]
    assert data["changes"][1]["summary"] == "Added wait step pause: for 2 days"


def test_the_diff_says_what_changed_per_step_and_for_the_journey(editor_client, journey):
    journey_publish(journey=journey)
    changed = definition(goal={"event": "order.completed", "within_hours": 48})
    changed["trigger"]["event"] = "cart.abandoned"
    changed["steps"][1]["config"]["minutes"] = 4320
    changed["steps"][0]["config"]["channel"] = "sms"
    changed["steps"][2]["alt_next"] = "bye"
    changed["steps"][3]["label"] = "Thank you"
    changed["steps"].append({"key": "bye", "kind": "exit"})
    del changed["steps"][3]
    changed["steps"][2]["next"] = ""
    journey_save(changed)

    data = editor_client.get(url("diff", journey)).json()

    assert data["published_version"] == 1
    said = {(c["where"], c["change"]): c["summary"] for c in data["changes"]}
    assert said == {
        ("trigger", "changed"): "Trigger: event from order.completed to cart.abandoned",
        ("goal", "changed"): "Goal added: order.completed",
        ("steps.hello", "changed"): "Send changed from “journey-hello by email” "
        "to “journey-hello by sms”",
        ("steps.pause", "changed"): "Wait changed from 2 days to 3 days",
        (
            "steps.vip",
            "changed",
        ): "Yes: goes to the end (was thanks); No: goes to bye (was the end)",
        ("steps.bye", "added"): "Added exit step bye: leave the journey",
        ("steps.thanks", "removed"): "Removed send step thanks",
    }
    assert all(c["step"] == c["where"].removeprefix("steps.") for c in data["changes"] if c["step"])


def test_an_unchanged_draft_has_no_changes(editor_client, journey):
    journey_publish(journey=journey)

    data = editor_client.get(url("diff", journey)).json()

    assert data == {"published_version": 1, "changes": []}
    state = editor_client.get(url("state", journey)).json()
    assert state["journey"]["has_unpublished_changes"] is False
    assert state["published"] == journey.versions.get().definition


def test_versions_say_who_published_what_and_when_newest_first(
    editor_client, api, api_key_factory, journey
):
    # v1 from the canvas by the editor, v2 through the API (the journey is active), v3
    # by the system.
    assert post(editor_client, "publish", journey, {}).status_code == 200
    journey.status = "active"
    journey.save(update_fields=["status"])
    exported = api.get("/api/v1/journeys/welcome").json()
    exported["steps"][1]["config"]["minutes"] = 60
    assert api.put("/api/v1/journeys/welcome", exported, format="json").status_code == 200
    again = definition()
    again["steps"][0]["config"]["channel"] = "sms"
    again["steps"][1]["config"]["minutes"] = 60
    journey_save(again)

    response = editor_client.get(url("versions", journey))

    assert response.status_code == 200
    rows = response.json()
    assert [(r["number"], r["published_by"], r["summary"], r["steps"]) for r in rows] == [
        (3, "system", "1 step changed", 4),
        (2, "API key test", "1 step changed", 4),
        (1, "Eda Tor", "First version", 4),
    ]
    assert rows[0]["current"] is True and rows[1]["current"] is False
    assert rows[0]["published_at"] >= rows[2]["published_at"]
    assert JourneyVersion.objects.get(journey=journey, number=2).published_via == "API key test"


def test_the_journey_page_lists_the_version_history(editor_client, journey):
    post(editor_client, "publish", journey, {})

    page = editor_client.get(reverse("admin:journeys_journey_change", args=[journey.pk]))

    text = page.content.decode()
    assert "Version history" in text
    assert "v1 (live)" in text and "Eda Tor" in text and "First version" in text


def test_changes_of_a_kind_swap_and_a_new_entry_step_are_spelled_out():
    old = definition()
    new = definition()
    new["steps"][3] = {"key": "thanks", "kind": "wait", "next": "", "config": {"minutes": 60}}
    new["steps"].insert(0, new["steps"].pop(1))

    said = [c["summary"] for c in canvas.changes(old, new)]

    assert "Customers now enter at pause (was hello)" in said
    assert "Changed from a send step to a wait step: for 1 h" in said
