"""/api/v1/customers/{external_id}/export, /erase and /preferences through the real endpoints."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from orchestrator.consent.models import ChannelOptOut, ConsentRecord, Subscription, Suppression
from tests.api.conftest import assert_error
from tests.delivery.factories import make_customer, make_topic

pytestmark = pytest.mark.django_db


@pytest.fixture
def topics(db):
    return {
        "promos": make_topic("promos", default_opt_in=False, channels=["email", "sms"]),
        "news": make_topic("news", default_opt_in=True),
        "receipts": make_topic("receipts", kind="transactional"),
    }


@pytest.fixture
def alex(db):
    return make_customer("alex", email="alex@example.com", phone="+14155550100")


# --- export and erase ---------------------------------------------------------------------


def test_export_needs_read_and_a_known_customer(alex, client_for):
    assert_error(APIClient().get("/api/v1/customers/alex/export"), 401, "not_authenticated")
    assert_error(client_for("track").get("/api/v1/customers/alex/export"), 403)
    assert_error(client_for("read").get("/api/v1/customers/nobody/export"), 404, "not_found")

    response = client_for("read").get("/api/v1/customers/alex/export")

    assert response.status_code == 200
    assert response.json()["customer"]["email"] == "alex@example.com"


def test_erase_needs_admin_answers_a_summary_and_then_404(alex, client_for):
    assert_error(APIClient().post("/api/v1/customers/alex/erase"), 401)
    assert_error(client_for("read", "track", "send").post("/api/v1/customers/alex/erase"), 403)
    admin = client_for("admin")

    response = admin.post("/api/v1/customers/alex/erase")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["external_id"] == "alex" and body["erased"] is True
    assert body["suppressed_channels"] == ["email", "sms"]
    assert body["deleted"]["audience.Customer"] == 1
    assert Suppression.objects.filter(reason="erased").count() == 2
    assert_error(admin.post("/api/v1/customers/alex/erase"), 404, "not_found")


def test_erase_with_an_idempotency_key_replays_the_first_answer(alex, client_for):
    admin = client_for("admin")
    first = admin.post("/api/v1/customers/alex/erase", HTTP_IDEMPOTENCY_KEY="erase-alex")
    again = admin.post("/api/v1/customers/alex/erase", HTTP_IDEMPOTENCY_KEY="erase-alex")

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"


# --- preferences --------------------------------------------------------------------------


def test_preferences_read_the_choices_and_defaults(alex, topics, client_for):
    assert_error(client_for("track").get("/api/v1/customers/alex/preferences"), 403)

    response = client_for("read").get("/api/v1/customers/alex/preferences")

    assert response.status_code == 200
    assert response.json() == {
        "topics": {
            "news": {"email": True, "sms": True, "whatsapp": True, "line": True},
            "promos": {"email": False, "sms": False},
        },
        "channels": {"email": True, "sms": True, "whatsapp": True, "line": True},
        "quiet_hours": None,
        "timezone": "UTC",
        "paused_until": None,
        "channel_order": [],
        "max_per_week": None,
        "digests": {},
    }


def test_patch_changes_preferences_and_records_consent_with_source_api(alex, topics, client_for):
    assert_error(
        client_for("read").patch("/api/v1/customers/alex/preferences", {}, format="json"), 403
    )
    body = {
        "topics": {"promos": {"email": True}, "news": {"sms": False}},
        "channels": {"whatsapp": False},
        "quiet_hours": {"start": "21:30", "end": "07:00"},
        "timezone": "Asia/Tokyo",
        "paused_until": "2030-01-01T00:00:00+09:00",
        "channel_order": ["line", "email"],
        "max_per_week": 2,
    }

    response = client_for("track").patch("/api/v1/customers/alex/preferences", body, format="json")

    assert response.status_code == 200, response.content
    got = response.json()
    assert got["topics"]["promos"] == {"email": True, "sms": False}
    assert got["topics"]["news"]["sms"] is False
    assert got["channels"]["whatsapp"] is False
    assert got["quiet_hours"] == {"start": "21:30", "end": "07:00"}
    assert (got["timezone"], got["channel_order"], got["max_per_week"]) == (
        "Asia/Tokyo",
        ["line", "email"],
        2,
    )
    assert got["paused_until"].startswith("2029-12-31T15:00:00")
    ledger = {
        (r.topic.key if r.topic else None, r.channel, r.action, r.source)
        for r in ConsentRecord.objects.filter(customer=alex).select_related("topic")
    }
    assert ledger == {
        ("promos", "email", "opt_in", "api"),
        ("news", "sms", "opt_out", "api"),
        (None, "whatsapp", "opt_out", "api"),
        (None, "", "preferences", "api"),
    }
    assert all(r.evidence["api_key"].startswith("ok_") for r in ConsentRecord.objects.all())

    # The same document again changes nothing, so the ledger gets nothing new.
    again = client_for("track").patch("/api/v1/customers/alex/preferences", body, format="json")
    assert again.status_code == 200 and ConsentRecord.objects.count() == 4


def test_patch_true_lifts_a_channel_opt_out_but_not_a_carrier_stop(alex, topics, client_for):
    track = client_for("track")
    track.patch("/api/v1/customers/alex/preferences", {"channels": {"sms": False}}, format="json")
    Suppression.objects.create(channel="sms", address_hash="x" * 64, reason="stop")

    response = track.patch(
        "/api/v1/customers/alex/preferences", {"channels": {"sms": True}}, format="json"
    )

    assert response.json()["channels"]["sms"] is True
    assert not ChannelOptOut.objects.exists()
    assert Suppression.objects.filter(reason="stop").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"topics": {"nope": {"email": True}}}, "topics.nope"),
        ({"topics": {"promos": {"fax": True}}}, "topics.promos.fax"),
        ({"topics": {"promos": {"whatsapp": True}}}, "topics.promos.whatsapp"),
        ({"topics": {"promos": {"email": "yes"}}}, "topics.promos.email"),
        ({"topics": {"promos": True}}, "topics.promos"),
        ({"topics": {"receipts": {"email": False}}}, "topics.receipts"),
        ({"topics": ["promos"]}, "topics"),
        ({"channels": {"pigeon": False}}, "channels.pigeon"),
        ({"channels": {"sms": 0}}, "channels.sms"),
        ({"quiet_hours": {"start": "22:00"}}, "quiet_hours"),
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "22:00", "end": 7}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "07:00", "end": "07:00"}}, "quiet_hours"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": None}, "timezone"),
        ({"paused_until": "2030-01-01T00:00:00"}, "paused_until"),
        ({"paused_until": "next tuesday"}, "paused_until"),
        ({"paused_until": "2030-13-45T00:00:00Z"}, "paused_until"),
        ({"channel_order": ["email", "email"]}, "channel_order"),
        ({"channel_order": "email"}, "channel_order"),
        ({"max_per_week": 0}, "max_per_week"),
        ({"max_per_week": True}, "max_per_week"),
        ({"max_per_week": "3"}, "max_per_week"),
        ({"favourite_colour": "blue"}, "favourite_colour"),
        (["topics"], "non_field_errors"),
    ],
)
def test_a_bad_patch_is_a_400_naming_the_field_and_changes_nothing(
    alex, topics, client_for, body, field
):
    valid_part = {"channels": {"email": False}}
    if isinstance(body, dict):
        body = {**valid_part, **body}

    response = client_for("track").patch("/api/v1/customers/alex/preferences", body, format="json")

    assert_error(response, 400, "invalid", fields=(field,))
    assert not ConsentRecord.objects.exists() and not ChannelOptOut.objects.exists()
    assert not Subscription.objects.exists()


def test_malformed_json_and_unknown_customers_are_4xx(alex, topics, client_for):
    track = client_for("track")
    response = track.generic(
        "PATCH", "/api/v1/customers/alex/preferences", "{nope", content_type="application/json"
    )
    assert_error(response, 400, "malformed_json")
    assert_error(
        track.patch("/api/v1/customers/nobody/preferences", {}, format="json"), 404, "not_found"
    )
    assert_error(client_for("read").get("/api/v1/customers/nobody/preferences"), 404)


def test_the_schema_documents_the_new_paths():
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    paths = schema["paths"]
    assert set(paths["/api/v1/customers/{external_id}/export"]) == {"get"}
    assert set(paths["/api/v1/customers/{external_id}/erase"]) == {"post"}
    assert set(paths["/api/v1/customers/{external_id}/preferences"]) == {"get", "patch"}
