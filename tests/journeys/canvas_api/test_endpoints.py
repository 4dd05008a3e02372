"""The canvas's JSON endpoints: state, validate, save a draft, publish, simulate, preview,
and who may call which; bad input is a 400 with problems, never a 500."""

from __future__ import annotations

import pytest
from django.urls import reverse

from journeys.definition import definition_of, export
from journeys.models import Journey, JourneyVersion
from tests.delivery.factories import make_customer
from tests.journeys.canvas_api.conftest import definition, post, url

pytestmark = pytest.mark.django_db

ENDPOINTS = ("state", "diff", "counts", "versions")


def test_state_has_the_draft_problems_catalog_and_every_url(editor_client, journey):
    response = editor_client.get(url("state", journey))

    assert response.status_code == 200
    data = response.json()
    assert data["journey"] == {
        "pk": journey.pk,
        "key": "welcome",
        "name": "Welcome",
        "status": "draft",
        "published_version": None,
        "has_unpublished_changes": True,
        "draft_pending": False,
        "draft_saved_at": None,
        "draft_saved_by": None,
        "stale": False,
    }
    assert data["draft"] == definition_of(journey)
    assert data["published"] is None
    assert data["problems"] == []
    for name in ("state", "validate", "draft", "diff", "publish", "simulate", "counts", "discard"):
        assert data["urls"][name] == url(name, journey)
    assert data["urls"]["preview"] == url("preview", journey)
    assert data["urls"]["versions"] == url("versions", journey)
    assert data["urls"]["form"] == reverse("admin:journeys_journey_change", args=[journey.pk])
    catalog = data["catalog"]
    kinds = {k["kind"]: k for k in catalog["step_kinds"]}
    assert set(kinds) == {
        "send",
        "digest",
        "wait",
        "wait_for_event",
        "branch",
        "split",
        "update_attribute",
        "webhook",
        "exit",
    }
    assert kinds["branch"]["exits"] == ["next", "alt_next"]
    assert kinds["branch"]["exit_labels"] == ["yes", "no"]
    assert kinds["split"]["exit_labels"] == ["arm A", "arm B"]
    assert kinds["wait_for_event"]["exit_labels"][1] == "on timeout"
    assert kinds["exit"]["exits"] == []
    # Only the kind's own fields: a send step asks nothing about waiting.
    assert [f["name"] for f in kinds["send"]["fields"]] == [
        "template",
        "channel",
        "fallback_channel",
        "ttl_hours",
    ]
    assert catalog["templates"] == [
        {
            "key": "journey-hello",
            "name": "journey-hello",
            "channels": ["email", "sms"],
            "locales": ["en"],
        }
    ]
    assert catalog["topics"][0]["key"] == "journey-news"
    assert "preferred" in catalog["channels"]
    assert {"op": "in", "label": "is one of"} in catalog["operators"]["attribute"]
    assert {t["kind"] for t in catalog["trigger_kinds"]} >= {"event", "date", "manual"}


def test_state_lists_events_and_attributes_seen(editor_client, journey):
    from orchestrator.audience.services import event_record

    customer = make_customer("ann", attributes={"first_name": "Ann", "vip": True, "age": 31})
    for name in ("order.completed", "cart.abandoned", "order.completed"):
        event_record(customer=customer.external_id, name=name, properties={})

    catalog = editor_client.get(url("state", journey)).json()["catalog"]

    assert catalog["events"] == ["cart.abandoned", "order.completed"]
    assert {"name": "vip", "type": "boolean"} in catalog["attributes"]
    assert {"name": "age", "type": "number"} in catalog["attributes"]


def test_validate_returns_problems_per_step_in_plain_words_and_saves_nothing(
    editor_client, journey
):
    broken = definition()
    broken["steps"][0]["config"] = {"channel": "email"}
    broken["steps"][2]["config"]["conditions"][0]["op"] = "between"
    broken["trigger"] = {"kind": "event"}

    response = post(editor_client, "validate", journey, {"definition": broken})

    assert response.status_code == 200
    problems = response.json()["problems"]
    by_step = {p["step"]: p for p in problems}
    assert by_step["hello"]["message"] == "Choose the message template to send."
    assert by_step["hello"]["field"] == "steps.hello"
    vip = by_step["vip"]["message"]
    assert "is one of" in vip and "not_in" not in vip and "between" not in vip
    assert by_step[None]["field"] == "trigger.event"
    journey.refresh_from_db()
    assert definition_of(journey)["steps"][0]["config"]["template"] == "journey-hello"


def test_saving_a_draft_keeps_it_apart_from_the_running_journey(editor_client, journey):
    changed = definition(name="Welcome back")
    changed["steps"][1]["config"]["minutes"] = 4320

    response = post(editor_client, "draft", journey, {"definition": changed})

    assert response.status_code == 200, response.content
    data = response.json()
    assert data["problems"] == []
    assert data["has_unpublished_changes"] is True
    assert data["draft"] == changed
    journey.refresh_from_db()
    assert journey.draft_definition == changed
    assert journey.name == "Welcome"
    assert definition_of(journey)["steps"][1]["config"]["minutes"] == 2880


def test_a_draft_with_problems_is_saved_and_its_problems_returned(editor_client, journey):
    broken = definition()
    broken["steps"][1]["next"] = "nowhere"

    response = post(editor_client, "draft", journey, {"definition": broken})

    assert response.status_code == 200
    assert response.json()["problems"] == [
        {
            "field": "steps.pause",
            "step": "pause",
            "message": "Goes to 'nowhere', which is not a step.",
        }
    ]
    journey.refresh_from_db()
    assert journey.draft_definition["steps"][1]["next"] == "nowhere"
    assert definition_of(journey)["steps"][1]["next"] == "vip"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'"text"',
        b'{"definition": 5}',
        b'{"definition": {"steps": "many"}}',
        b'{"definition": {"key": "welcome", "name": 7, "topic": [], "steps": [{"key": 1}]}}',
        b'{"definition": {"key": "welcome", "name": "W", "topic": "journey-news", '
        b'"trigger": {"kind": "recurring", "cron": 5}, "steps": [{"key": "a", "kind": "exit"}]}}',
        b"\xff\xfe",
    ],
)
@pytest.mark.parametrize("name", ["draft", "validate"])
def test_bad_json_or_wrong_types_are_a_400_never_a_500(editor_client, journey, body, name):
    response = editor_client.post(url(name, journey), body, content_type="application/json")

    if name == "validate" and response.status_code == 200:
        assert response.json()["problems"]  # a definition with problems: said, not saved
    else:
        assert response.status_code == 400, response.content
        problems = response.json()["problems"]
        assert problems and all(p["message"] for p in problems)
    assert definition_of(journey)["name"] == "Welcome"


def test_wrong_types_name_the_step_they_are_in(editor_client, journey):
    broken = definition()
    broken["steps"][0]["config"]["template"] = ["journey-hello"]

    response = post(editor_client, "draft", journey, {"definition": broken})

    assert response.status_code == 400
    [problem] = response.json()["problems"]
    assert problem["step"] == "hello"
    assert problem["field"] == "steps.hello.config.template"
    assert problem["message"] == "Template: must be a string."


def test_save_and_publish_equals_the_api_put_of_the_same_definition(
    editor_client, api, template, journey
):
    wanted = definition(name="Welcome v2")
    wanted["steps"][0]["config"]["fallback_channel"] = "sms"

    assert post(editor_client, "draft", journey, {"definition": wanted}).status_code == 200
    published = post(editor_client, "publish", journey, {})
    assert published.status_code == 200
    assert published.json()["version"] == 1
    journey = Journey.objects.select_related("current_version", "topic").get(pk=journey.pk)
    from_canvas = export(journey)
    from_canvas_version = journey.current_version.definition

    # The same definition through the API, on a second journey with the same content.
    twin = {**wanted, "key": "welcome-twin"}
    assert api.put("/api/v1/journeys/welcome-twin", twin, format="json").status_code == 201
    twin_journey = Journey.objects.get(key="welcome-twin")
    from journeys.services import journey_publish

    journey_publish(journey=twin_journey)
    from_api = api.get("/api/v1/journeys/welcome-twin").json()

    assert {**from_api, "key": "welcome"} == from_canvas
    assert {**twin_journey.versions.get().definition, "key": "welcome"} == from_canvas_version


def test_publish_records_who_published_and_an_unchanged_draft_publishes_nothing_new(
    editor_client, editor, journey
):
    first = post(editor_client, "publish", journey, {})
    again = post(editor_client, "publish", journey, {})

    assert first.json()["version"] == again.json()["version"] == 1
    version = JourneyVersion.objects.get(journey=journey)
    assert version.published_by == editor
    assert version.published_via == ""


def test_publishing_a_broken_draft_is_a_400_with_the_problems(editor_client, journey):
    broken = definition()
    broken["steps"][1]["next"] = "gone"
    assert post(editor_client, "draft", journey, {"definition": broken}).status_code == 200

    response = post(editor_client, "publish", journey, {})

    assert response.status_code == 400
    assert response.json()["problems"][0]["step"] == "pause"
    assert not JourneyVersion.objects.filter(journey=journey).exists()


def test_simulate_returns_the_forecast_of_the_saved_draft(editor_client, journey):
    response = post(editor_client, "simulate", journey, {"days": 3, "sample": 50})

    assert response.status_code == 200, response.content
    data = response.json()
    assert len(data["days"]) == 3
    assert set(data) >= {"days", "totals", "sample", "assumptions"}


@pytest.mark.parametrize("body", [{"days": 0}, {"days": "many"}, {"days": 10_000}])
def test_simulate_with_bad_days_is_a_400(editor_client, journey, body):
    response = post(editor_client, "simulate", journey, body)

    assert response.status_code == 400
    assert response.json()["message"]


def test_preview_renders_the_template_for_a_given_customer(editor_client, journey):
    make_customer("maria", attributes={"first_name": "Maria"})

    response = editor_client.get(
        url("preview", journey, template="journey-hello", channel="email", customer="maria")
    )

    assert response.status_code == 200, response.content
    data = response.json()
    assert data["customer"]["external_id"] == "maria"
    assert data["subject"] == "Hello Maria"
    assert data["body"] == "Hi Maria, your [data.item] is ready."
    assert data["missing"] == ["data.item"]
    assert data["html"].startswith("<p>Hi Maria")
    assert (data["channel"], data["locale"]) == ("email", "en")


def test_preview_without_a_customer_takes_one_with_the_locale_else_a_sample(editor_client, journey):
    sample = editor_client.get(url("preview", journey, template="journey-hello", channel="sms"))
    make_customer("ken", locale="ja", attributes={"first_name": "Ken"})
    japanese = editor_client.get(
        url("preview", journey, template="journey-hello", channel="sms", locale="ja")
    )

    assert sample.status_code == 200
    assert sample.json()["customer"]["sample"] is True
    assert sample.json()["body"] == "Hi Alex: [data.item] ready."
    assert japanese.json()["customer"]["external_id"] == "ken"
    assert japanese.json()["locale"] == "en"  # the only variant there is


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({}, "Choose a template"),
        ({"template": "nope"}, "no message template 'nope'"),
        ({"template": "journey-hello", "channel": "line"}, "has no line version"),
        ({"template": "journey-hello", "customer": "nobody"}, "no customer 'nobody'"),
    ],
)
def test_preview_that_cannot_render_is_a_400_in_plain_words(editor_client, journey, query, words):
    response = editor_client.get(url("preview", journey, **query))

    assert response.status_code == 400
    assert words in response.json()["message"]


def test_preview_of_a_template_that_fails_to_render_is_a_400(editor_client, journey):
    from tests.delivery.factories import make_template

    make_template("broken", variants={("sms", "en"): {"body": "{{ customer.first_name | nope }}"}})

    response = editor_client.get(url("preview", journey, template="broken", channel="sms"))

    assert response.status_code == 400
    assert "cannot be shown" in response.json()["message"]


# --- who may do what -----------------------------------------------------------------


@pytest.mark.parametrize("name", [*ENDPOINTS, "page"])
def test_anonymous_visitors_are_sent_to_the_login_page(client, journey, name):
    target = (
        reverse("admin:journeys_journey_canvas", args=[journey.pk])
        if name == "page"
        else url(name, journey)
    )

    response = client.get(target)

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


@pytest.mark.parametrize("name", ["draft", "publish", "validate", "simulate"])
def test_anonymous_writes_change_nothing(client, journey, name):
    response = post(client, name, journey, {"definition": definition(name="Hacked")})

    assert response.status_code in (302, 403)
    assert Journey.objects.get(pk=journey.pk).name == "Welcome"


@pytest.mark.parametrize("name", ENDPOINTS)
def test_view_only_staff_can_read(viewer_client, journey, name):
    assert viewer_client.get(url(name, journey)).status_code == 200


def test_view_only_staff_can_preview(viewer_client, journey):
    response = viewer_client.get(url("preview", journey, template="journey-hello", channel="sms"))

    assert response.status_code == 200


@pytest.mark.parametrize("name", ["draft", "publish"])
def test_view_only_staff_cannot_save_or_publish(viewer_client, journey, name):
    response = post(viewer_client, name, journey, {"definition": definition(name="Changed")})

    assert response.status_code == 403
    assert Journey.objects.get(pk=journey.pk).name == "Welcome"
    assert not JourneyVersion.objects.filter(journey=journey).exists()


def test_reads_refuse_posts_and_writes_refuse_gets(editor_client, journey):
    assert editor_client.post(url("state", journey)).status_code == 405
    assert editor_client.get(url("draft", journey)).status_code == 405


def test_an_unknown_journey_is_a_404(editor_client, journey):
    response = editor_client.get(
        reverse("admin:journeys_journey_canvas_state", args=[journey.pk + 1000])
    )

    assert response.status_code == 404


def test_the_canvas_page_embeds_the_state_and_links_back_to_the_form(editor_client, journey):
    response = editor_client.get(reverse("admin:journeys_journey_canvas", args=[journey.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert '<script id="canvas-state" type="application/json">' in page
    assert response.context["state"]["draft"] == definition_of(journey)
    assert response.context["state"]["urls"]["draft"] == url("draft", journey)
    assert reverse("admin:journeys_journey_change", args=[journey.pk]) in page
    assert "Edit as a form" in page


def test_view_only_staff_see_the_page_told_they_cannot_change(viewer_client, journey):
    response = viewer_client.get(reverse("admin:journeys_journey_canvas", args=[journey.pk]))
    state = viewer_client.get(url("state", journey)).json()

    assert response.status_code == 200
    assert response.context["can_change"] is False
    assert state["can_change"] is False
