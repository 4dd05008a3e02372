"""The journey builder in the admin, through the Django test client on real Postgres."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from journeys import engine
from journeys.definition import export
from journeys.enrollment import Candidate, enroll
from journeys.models import Journey, JourneyVersion
from journeys.services import journey_activate, journey_save
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import Message, MessageTemplate
from tests.delivery.factories import make_customer, make_template
from tests.journeys.admin.helpers import add_url, change_url, form_data, step_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss-12345")
    client.force_login(user)
    return client


def definition(**overrides):
    return {
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
                "next": "",
                "config": {"mode": "duration", "minutes": 2880},
            },
        ],
        **overrides,
    }


def texts(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_marketer_builds_a_journey_with_plain_fields_and_gets_the_definition_json(
    admin_client, topic, template
):
    data = form_data(
        [
            {
                "key": "hello",
                "kind": "send",
                "next": "pause",
                "send_template": "journey-hello",
                "send_channel": "email",
                "send_fallback": "sms",
                "send_ttl_hours": "12",
            },
            {
                "key": "pause",
                "kind": "wait",
                "next": "vip",
                "wait_amount": "2",
                "wait_unit": "days",
            },
            {
                "key": "vip",
                "kind": "branch",
                "next": "reply",
                "alt_next": "",
                "branch_conditions": [
                    {"type": "attribute", "name": "tier", "op": "eq", "value": "gold"},
                    {
                        "type": "event",
                        "name": "order.completed",
                        "op": "happened",
                        "within_hours": "72",
                    },
                    {"type": "", "name": "", "op": "", "value": ""},
                ],
                "branch_match": "any",
            },
            {
                "key": "reply",
                "kind": "wait_for_event",
                "next": "ab",
                "alt_next": "",
                "wfe_event": "message.replied",
                "wfe_timeout": "3",
                "wfe_timeout_unit": "hours",
            },
            {
                "key": "ab",
                "kind": "split",
                "next": "tag",
                "alt_next": "hook",
                "split_percent": "30",
            },
            {
                "key": "tag",
                "kind": "update_attribute",
                "attr_name": "welcomed",
                "attr_value": "true",
            },
            {
                "key": "hook",
                "kind": "webhook",
                "webhook_url": "https://crm.example.com/hook",
                "webhook_timeout": "10",
                "next": "bye",
            },
            {"key": "bye", "kind": "exit", "label": "Done"},
        ],
        topic=topic.pk,
        event_filter=[{"name": "sku", "op": "in", "value": "A1, B2"}],
        exit_events_rows=[
            {"event": "unsubscribed", "match": ""},
            {"event": "order.refunded", "match": "sku"},
        ],
        goal_event="order.completed",
        goal_within_hours="168",
    )
    response = admin_client.post(add_url(), data)
    assert response.status_code == 302, response.context["errors"] if response.context else ""

    journey = Journey.objects.get(key="welcome")
    assert journey.trigger == {
        "event": "order.completed",
        "filter": [{"type": "property", "name": "sku", "op": "in", "value": ["A1", "B2"]}],
    }
    assert journey.exit_events == [
        {"event": "unsubscribed"},
        {"event": "order.refunded", "match": "sku"},
    ]
    steps = {s.key: s for s in journey.steps.all()}
    assert [s.key for s in journey.steps.order_by("position")] == [
        "hello",
        "pause",
        "vip",
        "reply",
        "ab",
        "tag",
        "hook",
        "bye",
    ]
    assert steps["hello"].config == {
        "template": "journey-hello",
        "channel": "email",
        "fallback_channel": "sms",
        "ttl_hours": 12,
    }
    assert steps["pause"].config == {"minutes": 2880}
    assert steps["vip"].config == {
        "conditions": [
            {"type": "attribute", "name": "tier", "op": "eq", "value": "gold"},
            {"type": "event", "name": "order.completed", "op": "happened", "within_hours": 72},
        ],
        "match": "any",
    }
    assert steps["reply"].config == {"event": "message.replied", "timeout_minutes": 180}
    assert steps["ab"].config == {"percent": 30}
    assert steps["tag"].config == {"name": "welcomed", "value": True}
    assert steps["hook"].config == {"url": "https://crm.example.com/hook", "timeout_seconds": 10}
    assert journey.status == Journey.Status.DRAFT and journey.current_version is None

    # The change form shows the settings back as fields, not JSON.
    page = admin_client.get(change_url(journey)).content.decode()
    assert 'name="steps-2-branch_conditions_0_name" value="tier"' in page
    assert 'name="event_filter_0_value" value="A1, B2"' in page
    # The graph is the canvas's: the form leads there.
    assert reverse("admin:journeys_journey_canvas", args=[journey.pk]) in page


def test_an_unreachable_step_is_refused_with_a_message_on_that_step(admin_client, topic, template):
    data = form_data(
        [
            {"key": "hello", "kind": "send", "send_template": "journey-hello"},
            {"key": "later", "kind": "wait", "wait_amount": "1"},
        ],
        topic=topic.pk,
    )
    response = admin_client.post(add_url(), data)
    assert response.status_code == 200
    assert not Journey.objects.exists()
    step_form = response.context["inline_admin_formsets"][0].formset.forms[1]
    assert step_form.non_field_errors() == ["No path from the first step leads here."]
    assert "No path from the first step leads here." in response.content.decode()


def test_a_send_without_a_template_is_refused_in_words(admin_client, topic, template):
    data = form_data([{"key": "hello", "kind": "send", "send_template": ""}], topic=topic.pk)
    response = admin_client.post(add_url(), data)
    assert response.status_code == 200
    assert "Choose the message template to send." in response.content.decode()
    assert not Journey.objects.exists()


def test_a_loop_without_a_wait_is_refused_and_a_wait_fixes_it(admin_client, topic, template):
    steps = [
        {"key": "hello", "kind": "send", "send_template": "journey-hello", "next": "check"},
        {
            "key": "check",
            "kind": "branch",
            "next": "hello",
            "alt_next": "",
            "branch_conditions": [
                {"type": "attribute", "name": "tier", "op": "exists", "value": ""}
            ],
        },
    ]
    response = admin_client.post(add_url(), form_data(steps, topic=topic.pk))
    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    assert formset.non_form_errors() == [
        "The loop hello → check → hello has no wait in it; add a wait step."
    ]
    steps[1]["next"] = "nap"
    steps.append(
        {"key": "nap", "kind": "wait", "wait_amount": "1", "wait_unit": "days", "next": "hello"}
    )
    response = admin_client.post(add_url(), form_data(steps, topic=topic.pk))
    assert response.status_code == 302
    assert Journey.objects.get().steps.count() == 3


def test_trigger_problems_show_on_the_trigger_fields(admin_client, topic, template):
    data = form_data(
        [{"key": "hello", "kind": "send", "send_template": "journey-hello"}],
        topic=topic.pk,
        trigger_kind="recurring",
        rec_cron="every monday",
        rec_timezone="Mars/Olympus",
    )
    response = admin_client.post(add_url(), data)
    form = response.context["adminform"].form
    assert form.errors["rec_cron"] == [
        "Give the schedule as five cron fields, e.g. '0 9 * * 1' (Mon 09:00)."
    ]
    assert form.errors["rec_timezone"] == ["Unknown time zone 'Mars/Olympus'."]


def test_activate_and_pause_buttons_change_the_status(admin_client, topic, template):
    journey = journey_save(definition())
    url = reverse("admin:journeys_journey_activate", args=[journey.pk])
    assert admin_client.get(url).status_code == 405

    response = admin_client.post(url, follow=True)
    journey.refresh_from_db()
    assert journey.status == Journey.Status.ACTIVE
    assert journey.current_version.number == 1
    assert "Activated: version 1 is live; new customers enter on it." in texts(response)
    assert b"Pause</button>" in response.content

    response = admin_client.post(
        reverse("admin:journeys_journey_pause", args=[journey.pk]), follow=True
    )
    journey.refresh_from_db()
    assert journey.status == Journey.Status.PAUSED
    assert any(t.startswith("Paused: nobody new enters") for t in texts(response))
    assert b"Resume</button>" in response.content


def test_activate_refuses_a_broken_definition_with_its_problems(admin_client, topic, template):
    journey = journey_save(definition())
    MessageTemplate.objects.filter(key="journey-hello").delete()
    response = admin_client.post(
        reverse("admin:journeys_journey_activate", args=[journey.pk]), follow=True
    )
    journey.refresh_from_db()
    assert journey.status == Journey.Status.DRAFT
    assert texts(response) == [
        "The journey was not activated. Fix these first:",
        "Step 'hello': There is no message template 'journey-hello'.",
    ]


def test_saving_a_live_journey_publishes_a_version_and_says_who_stays_on_the_old_one(
    admin_client, topic, template
):
    journey = journey_save(definition())
    journey_activate(journey=journey)
    journey.refresh_from_db()
    for n in range(2):
        enroll(journey, [Candidate(make_customer(f"c{n}").id, f"o{n}", {})])

    fields = {"topic": topic.pk, "key": "welcome", "name": "Welcome"}
    rows = step_rows(journey)
    # Saving without changes publishes nothing.
    response = admin_client.post(
        change_url(journey), form_data(rows, journey=journey, **fields), follow=True
    )
    assert response.status_code == 200
    assert JourneyVersion.objects.filter(journey=journey).count() == 1
    assert not [t for t in texts(response) if t.startswith("Published")]

    rows[1]["wait_amount"] = "3"
    response = admin_client.post(
        change_url(journey), form_data(rows, journey=journey, **fields), follow=True
    )
    assert "Published version 2; 2 customers on earlier versions finish on them." in texts(response)
    journey.refresh_from_db()
    assert journey.current_version.number == 2
    assert journey.current_version.definition["steps"][1]["config"] == {
        "mode": "duration",
        "minutes": 4320,
    }


def test_export_then_import_round_trips_and_import_replaces_the_draft_by_key(
    admin_client, topic, template
):
    original = journey_save(
        definition(
            exit_events=[{"event": "order.refunded", "match": "sku"}],
            goal={"event": "order.completed", "within_hours": 48, "exits": True},
        )
    )
    response = admin_client.get(reverse("admin:journeys_journey_export", args=[original.pk]))
    assert response["Content-Disposition"] == 'attachment; filename="journey-welcome.json"'
    exported = json.loads(response.content)
    assert exported["steps"][0]["config"] == {"template": "journey-hello", "channel": "email"}

    copy = {**exported, "key": "welcome-copy", "name": "Welcome copy"}
    response = admin_client.post(
        reverse("admin:journeys_journey_import"), {"text": json.dumps(copy)}, follow=True
    )
    assert "Imported 'Welcome copy'." in texts(response)
    imported = export(Journey.objects.get(key="welcome-copy"))
    assert {**imported, "key": "welcome", "name": "Welcome"} == exported

    # Same key again, with a change: the draft is replaced, not duplicated.
    exported["steps"][1]["config"]["minutes"] = 60
    response = admin_client.post(
        reverse("admin:journeys_journey_import"), {"text": json.dumps(exported)}, follow=True
    )
    assert "Replaced the draft of 'Welcome'." in texts(response)
    assert Journey.objects.count() == 2
    assert original.steps.get(key="pause").config["minutes"] == 60


def test_import_lists_json_and_definition_errors_clearly(admin_client, topic, template):
    url = reverse("admin:journeys_journey_import")
    response = admin_client.post(url, {"text": '{"key": "x",\n "name": }'})
    assert (
        "This is not valid JSON: line 2, column 10: Expecting value." in response.content.decode()
    )

    broken = definition()
    broken["steps"][0]["config"]["template"] = "nope"
    broken["steps"].append({"key": "stray", "kind": "exit"})
    page = admin_client.post(url, {"text": json.dumps(broken)}).content.decode()
    assert "Step &#x27;hello&#x27;: There is no message template &#x27;nope&#x27;." in page
    assert "Step &#x27;stray&#x27;: No path from the first step leads here." in page
    assert not Journey.objects.exists()


def test_test_send_queues_each_send_step_of_the_draft_to_one_customer(
    admin_client, topic, template
):
    other = make_template("journey-later", topic=topic)
    journey = journey_save(
        definition(
            steps=[
                {
                    "key": "hello",
                    "kind": "send",
                    "next": "pause",
                    "config": {"template": "journey-hello", "channel": "email"},
                },
                {"key": "pause", "kind": "wait", "next": "again", "config": {"minutes": 60}},
                {
                    "key": "again",
                    "kind": "send",
                    "config": {"template": other.key, "channel": "sms"},
                },
            ]
        )
    )
    customer = make_customer("mika")
    url = reverse("admin:journeys_journey_test_send", args=[journey.pk])

    response = admin_client.post(url, {"customer": "nobody"})
    assert "There is no customer with external id &#x27;nobody&#x27;." in response.content.decode()
    assert not Message.objects.exists()

    response = admin_client.post(url, {"customer": "mika"})
    sent = Message.objects.filter(customer=customer).order_by("id")
    assert [(m.template.key, m.channel, m.source, m.priority) for m in sent] == [
        ("journey-hello", "email", "admin", 9),
        ("journey-later", "sms", "admin", 9),
    ]
    page = response.content.decode()
    assert f"#{sent[0].pk}" in page and f"#{sent[1].pk}" in page


def test_the_canvas_counts_the_published_version_live_and_the_form_leads_there(
    admin_client, topic, template, outbox
):
    journey = journey_save(
        definition(
            steps=[
                {
                    "key": "hello",
                    "kind": "send",
                    "next": "pause",
                    "config": {"template": "journey-hello", "channel": "email"},
                },
                {"key": "pause", "kind": "wait", "next": "ask", "config": {"minutes": 60}},
                {
                    "key": "ask",
                    "kind": "branch",
                    "next": "",
                    "alt_next": "bye",
                    "config": {
                        "conditions": [
                            {"type": "attribute", "name": "tier", "op": "eq", "value": "gold"}
                        ]
                    },
                },
                {"key": "bye", "kind": "exit", "label": "Not gold"},
            ]
        )
    )
    journey_activate(journey=journey)
    journey.refresh_from_db()
    for n in range(3):
        enroll(journey, [Candidate(make_customer(f"d{n}").id, f"o{n}", {"item": "shoes"})])
    engine.advance_batch()
    assert dispatch_due()[0].sent == 3, list(Message.objects.values_list("last_error", flat=True))

    page = admin_client.get(change_url(journey)).content.decode()
    assert 'class="journey-diagram"' not in page
    canvas_url = reverse("admin:journeys_journey_canvas", args=[journey.pk])
    assert canvas_url in page
    counts = admin_client.get(f"{canvas_url}counts.json?of=published").json()
    assert counts["steps"]["hello"] == {"entered": 3, "waiting": 0, "sent": 3, "converted": 0}
    assert counts["steps"]["pause"]["waiting"] == 3
    assert counts["edges"] == {"hello->pause": 3}
