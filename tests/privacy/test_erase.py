"""Erasure (GDPR Art. 17): waiting sends canceled, data deleted, only address hashes kept."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from channels.webhooks.models import WebhookEvent
from journeys.models import Enrollment, StepRun
from orchestrator.audience.models import Customer, Event
from orchestrator.audience.services import customer_upsert
from orchestrator.consent.models import (
    ChannelOptOut,
    ChannelPreference,
    ConsentRecord,
    Subscription,
    Suppression,
    address_hash,
)
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import InboundMessage, Message, MessageEvent, MessageStatus
from orchestrator.privacy.services import customer_erase
from tests.delivery.factories import make_customer, make_template, make_topic, queue
from tests.privacy.conftest import EMAIL, PHONE, inbound_sms

pytestmark = pytest.mark.django_db


def test_erasure_cancels_the_waiting_messages_then_deletes_every_row_of_the_person(person):
    customer_id = person.customer.id

    summary = customer_erase(customer=person.customer, source="api")

    # The scheduled SMS and the journey's queued email: canceled first, so no dispatcher
    # could claim them before the commit, then deleted with the rest.
    assert summary.canceled_messages == 2
    assert summary.deleted["delivery.Message"] == 3
    assert not Customer.objects.filter(id=customer_id).exists()
    for model in (Event, Subscription, ConsentRecord, ChannelPreference, ChannelOptOut, Message):
        assert not model.objects.filter(customer_id=customer_id).exists(), model
    assert not MessageEvent.objects.filter(
        message_id__in=[person.sent.id, person.waiting.id]
    ).exists()


def test_erasure_keeps_only_a_hash_of_each_address(person):
    customer_erase(customer=person.customer, source="admin")

    kept = {(s.channel, s.address_hash, s.reason) for s in Suppression.objects.all()}
    assert kept == {
        ("email", address_hash("email", EMAIL), "erased"),
        ("sms", address_hash("sms", PHONE), "erased"),
        ("line", address_hash("line", "U" + "a" * 32), "erased"),
    }
    for suppression in Suppression.objects.all():
        assert EMAIL not in suppression.detail and "mika" not in suppression.detail
        assert suppression.detail == "erasure requested via admin"


def test_erasure_exits_active_journeys_and_deletes_the_trips(person):
    summary = customer_erase(customer=person.customer, source="api")

    assert summary.deleted["journeys.Enrollment exited"] == 1
    assert not Enrollment.objects.filter(id=person.enrollment.id).exists()
    assert not StepRun.objects.filter(enrollment_id=person.enrollment.id).exists()


def test_a_customer_created_again_with_the_same_email_is_suppressed_at_dispatch(
    person, outbox, client_for
):
    api = client_for("admin", "track")
    assert api.post("/api/v1/customers/mika/erase").status_code == 200
    outbox.clear()

    response = api.post(
        "/api/v1/customers",
        {"external_id": "mika-2", "email": "Mika@Example.com"},
        format="json",
    )
    assert response.status_code == 201
    again = Customer.objects.get(external_id="mika-2")
    promos = make_topic("promos-2", default_opt_in=True)
    message = queue(again, make_template(topic=promos), channel="email")

    dispatch_due()

    assert outbox == []
    message.refresh_from_db()
    assert message.status == MessageStatus.SUPPRESSED
    assert message.explanation[-1]["details"]["code"] == "suppressed"
    assert "Erased on request" in message.explanation[-1]["reason"]


def test_an_address_the_customer_had_before_is_suppressed_too(db, outbox):
    customer = make_customer("ren", email="old@example.com")
    queue(customer, make_template(topic=make_topic()), channel="email")
    customer, _ = customer_upsert(external_id="ren", email="new@example.com")

    customer_erase(customer=customer, source="api")

    hashes = set(Suppression.objects.filter(channel="email").values_list("address_hash", flat=True))
    assert hashes == {
        address_hash("email", "old@example.com"),
        address_hash("email", "new@example.com"),
    }


def test_an_existing_bounce_stays_a_bounce(db):
    customer = make_customer("kai", email="kai@example.com", phone="")
    Suppression.objects.create(
        channel="email", address_hash=address_hash("email", "kai@example.com"), reason="bounce"
    )

    customer_erase(customer=customer, source="api")

    assert Suppression.objects.get().reason == "bounce"


def test_erasure_deletes_inbound_messages_and_scrubs_the_raw_payloads(person, client):
    stranger = WebhookEvent.objects.create(
        provider="twilio",
        kind="inbound",
        event_id="SM-stranger",
        payload={"params": {"From": PHONE + "9", "Body": "not Mika"}},
        processed_at=timezone.now(),
    )

    summary = customer_erase(customer=person.customer, source="api")

    # Linked ones, and the one from before the shop told us who the number was.
    assert summary.deleted["webhooks.InboundMessage"] == 2
    assert not InboundMessage.objects.exists()
    events = WebhookEvent.objects.exclude(id=stranger.id)
    assert events.count() == 2  # kept, for the (provider, event id) dedupe
    assert all(e.payload == {"erased": True} and e.processed_at for e in events)
    stranger.refresh_from_db()
    assert stranger.payload["params"]["Body"] == "not Mika"  # a longer number is not theirs

    # A provider retrying the same delivery finds the row: nothing is re-created.
    inbound_sms(client, "Thanks, love the tea", sid="SM" + "1" * 32)
    assert not InboundMessage.objects.exists()


def test_the_admin_log_keeps_the_change_but_not_the_name(person):
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-12345")
    entry = LogEntry.objects.create(
        user=user,
        content_type=ContentType.objects.get_for_model(Customer),
        object_id=str(person.customer.id),
        object_repr="mika",
        action_flag=CHANGE,
        change_message='[{"changed": {"fields": ["Email"]}}]',
    )

    customer_erase(customer=person.customer, source="admin")

    entry.refresh_from_db()
    assert entry.object_repr == f"erased customer #{person.customer.id}"
    assert entry.change_message == ""


def test_erasing_someone_already_erased_says_so(db):
    customer = make_customer("gone")
    customer_erase(customer=customer, source="api")

    with pytest.raises(Customer.DoesNotExist):
        customer_erase(customer=customer, source="api")


def test_erasure_removes_the_dev_inbox_copies_of_what_was_sent_to_them(person):
    from channels.adapters.base import OutboundMessage
    from channels.devinbox.adapter import DevInboxAdapter
    from channels.devinbox.models import InboxMessage

    theirs = OutboundMessage(message_id=1, channel="email", to=EMAIL.upper(), body="hi")
    someone_else = OutboundMessage(message_id=2, channel="email", to="x@example.com", body="hi")
    DevInboxAdapter(alias="email").send([theirs, someone_else])

    customer_erase(customer=person.customer, source="api")

    assert list(InboxMessage.objects.values_list("to_address", flat=True)) == ["x@example.com"]
