"""Queued messages through the real dispatcher and the real provider SDKs to the emulator.

The dispatcher claims, checks consent, renders and hands off; the SendGrid and
Twilio adapters call the emulator over HTTP with the official SDKs; the outcome,
the provider's message id and the history are recorded on the message.
"""

from __future__ import annotations

import pytest

from orchestrator.consent.models import Suppression, address_hash
from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import MessageStatus
from tests.delivery.factories import (
    locmem_adapters,
    make_customer,
    make_template,
    make_topic,
    queue,
)
from tests.emulator import ProviderEmulator
from tests.emulator import sendgrid as sendgrid_emulator
from tests.emulator import twilio as twilio_emulator

ACCOUNT = "AC" + "1" * 32


@pytest.fixture
def emulator():
    with ProviderEmulator() as server:
        sendgrid_emulator.install(server)
        twilio_emulator.install(server)
        yield server


@pytest.fixture
def providers(settings, emulator):
    settings.CHANNEL_ADAPTERS = locmem_adapters() | {
        "email": {
            "BACKEND": "channels.adapters.sendgrid.SendGridAdapter",
            "OPTIONS": {
                "api_key": "SG.test-key",
                "from_email": "Stride Running <hello@example.com>",
                "base_url": emulator.url,
                "timeout": 2,
            },
        },
        "sms": {
            "BACKEND": "channels.adapters.twilio_sms.TwilioSmsAdapter",
            "OPTIONS": {
                "account_sid": ACCOUNT,
                "auth_token": "secret-token",
                "from_number": "+15005550006",
                "base_url": emulator.url,
                "timeout": 2,
            },
        },
    }
    return emulator


@pytest.mark.django_db
def test_email_and_sms_go_out_through_the_real_sdks_and_are_recorded(providers):
    customer = make_customer(attributes={"first_name": "Alex"}, phone="+14155550123")
    template = make_template(topic=make_topic("orders", kind="transactional"))
    email = queue(customer, template, channel="email", data={"item": "Trail shoe"})
    sms = queue(customer, template, channel="sms", data={"item": "Trail shoe"})

    stats, _more = dispatcher.dispatch_due()

    assert stats.sent == 2
    email.refresh_from_db()
    sms.refresh_from_db()
    assert (email.status, email.provider) == (MessageStatus.SENT, "sendgrid")
    assert (sms.status, sms.provider) == (MessageStatus.SENT, "twilio")
    [sent_mail] = providers.requests_to("/v3/mail/send")
    body = sent_mail.json()
    assert email.provider_message_id  # SendGrid's X-Message-Id
    assert body["personalizations"][0]["to"][0]["email"] == customer.email
    assert body["custom_args"] == {"message_id": str(email.id)}
    assert "Alex" in body["content"][0]["value"]
    [sent_sms] = providers.requests_to(f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json")
    form = sent_sms.form()
    assert form["To"] == ["+14155550123"]
    assert form["Body"] == ["Hi Alex: Trail shoe ready."]
    assert sms.provider_message_id.startswith("SM")
    assert list(sms.history.values_list("status", flat=True)) == ["queued", "sent"]
    # The segment count travels with the send in the message's trail.
    sent_entry = sms.explanation[-1]
    assert sent_entry["step"] == "send"
    assert sent_entry["details"]["provider_detail"]["segments"] == 1
    assert sent_entry["details"]["provider_detail"]["encoding"] == "GSM-7"


@pytest.mark.django_db
def test_a_provider_outage_retries_later_and_a_dead_number_fails_for_good(providers):
    customer = make_customer(phone="+14155550124")
    template = make_template(topic=make_topic("orders", kind="transactional"))
    email = queue(customer, template, channel="email")
    providers.fail_next("/v3/mail/send", status=503)
    providers.fail_next("/2010-04-01/", status=400, body=invalid_number_error())
    sms = queue(customer, template, channel="sms")

    stats, _more = dispatcher.dispatch_due()

    assert (stats.retrying, stats.failed) == (1, 1)
    email.refresh_from_db()
    sms.refresh_from_db()
    assert email.status == MessageStatus.QUEUED  # back in the outbox with a later send_after
    assert email.send_after > email.updated_at.replace(microsecond=0)
    assert sms.status == MessageStatus.FAILED
    assert "21211" in sms.last_error or "21211" in sms.history.last().reason


def invalid_number_error() -> dict:
    return {
        "code": 21211,
        "message": "The 'To' number +14155550124 is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }


@pytest.mark.django_db
def test_a_carrier_opt_out_suppresses_the_number_for_every_later_send(providers):
    customer = make_customer(phone="+14155550125")
    template = make_template(topic=make_topic("orders", kind="transactional"))
    providers.fail_next("/2010-04-01/", status=400, body=unsubscribed_error())
    first = queue(customer, template, channel="sms")

    stats, _more = dispatcher.dispatch_due()

    assert stats.failed == 1
    first.refresh_from_db()
    assert first.status == MessageStatus.FAILED
    assert "suppressed from now on (stop)" in first.history.last().reason
    [suppression] = Suppression.objects.all()
    assert (suppression.channel, suppression.reason) == ("sms", "stop")
    assert suppression.address_hash == address_hash("sms", "+14155550125")
    assert "+1415" not in suppression.detail and "21610" in suppression.detail

    # The next send to that number, even a transactional one, never reaches Twilio.
    second = queue(customer, template, channel="sms")
    sent_before = len(providers.requests_to("/2010-04-01/"))
    stats, _more = dispatcher.dispatch_due()

    second.refresh_from_db()
    assert second.status == MessageStatus.SUPPRESSED
    assert len(providers.requests_to("/2010-04-01/")) == sent_before


def unsubscribed_error() -> dict:
    return {
        "code": 21610,
        "message": "Attempt to send to unsubscribed recipient",
        "more_info": "https://www.twilio.com/docs/errors/21610",
        "status": 400,
    }
