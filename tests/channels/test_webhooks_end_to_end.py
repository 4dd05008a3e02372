"""The whole loop on real HTTP: our dispatcher sends through the Twilio SDK to the
emulator, which posts signed status callbacks and inbound messages to our running
server (SendGrid posts signed Event Webhook batches the same way); a worker's
processing turns them into statuses, suppressions, consent and events."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from channels.webhooks.processing import process_pending
from orchestrator.consent.models import ChannelOptOut, Suppression, address_hash
from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import InboundMessage, Message, MessageStatus
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

pytestmark = pytest.mark.django_db(transaction=True)

FROM = "+15005550006"


@pytest.fixture
def emulator():
    with ProviderEmulator() as server:
        twilio_emulator.install(server)
        yield server


@pytest.fixture
def wired(settings, emulator, live_server):
    settings.TWILIO_AUTH_TOKEN = twilio_emulator.AUTH_TOKEN
    settings.WEBHOOK_BASE_URL = None
    settings.KEYWORD_CONFIRMATIONS = True
    settings.CHANNEL_ADAPTERS = locmem_adapters() | {
        "sms": {
            "BACKEND": "channels.adapters.twilio_sms.TwilioSmsAdapter",
            "OPTIONS": {
                "account_sid": twilio_emulator.ACCOUNT_SID,
                "auth_token": twilio_emulator.AUTH_TOKEN,
                "from_number": FROM,
                "base_url": emulator.url,
                "status_callback": f"{live_server.url}/webhooks/twilio/status/",
                "timeout": 2,
            },
        }
    }
    return emulator, live_server


def test_a_send_is_delivered_by_a_signed_callback_even_when_reports_arrive_reversed(wired):
    emulator, _server = wired
    twilio_emulator.state(emulator).callback_order = "reversed"
    twilio_emulator.state(emulator).duplicate_callbacks = True
    customer = make_customer(phone="+14155550140")
    message = queue(
        customer, make_template(topic=make_topic("orders", kind="transactional")), channel="sms"
    )

    dispatcher.dispatch_due()
    attempts = twilio_emulator.wait_for_callbacks(emulator, 4, timeout=5)
    processed = process_pending()

    assert {a.status for a in attempts} == {204}  # every signed callback was accepted
    assert processed.statuses == 2  # "delivered" and "sent", each once despite duplicates
    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED  # "sent" came last and was ignored
    statuses = list(message.history.values_list("status", flat=True))
    assert statuses[:2] == ["queued", "sent"] and "delivered" in statuses


def test_a_dead_number_reported_later_is_suppressed(wired):
    emulator, _server = wired
    twilio_emulator.state(emulator).undeliverable["+14155550141"] = 30006
    customer = make_customer(phone="+14155550141")
    template = make_template(topic=make_topic("orders", kind="transactional"))
    message = queue(customer, template, channel="sms")

    dispatcher.dispatch_due()
    twilio_emulator.wait_idle(emulator, timeout=5)
    process_pending()

    message.refresh_from_db()
    assert message.status == MessageStatus.UNDELIVERED
    later = queue(customer, template, channel="sms")
    dispatcher.dispatch_due()
    later.refresh_from_db()
    assert later.status == MessageStatus.SUPPRESSED


def test_stop_by_text_opts_out_and_the_one_confirmation_goes_out_through_twilio(wired):
    emulator, server = wired
    customer = make_customer(phone="+14155550142")
    promos = make_topic("promos")

    status, _body = twilio_emulator.send_inbound(
        emulator,
        url=f"{server.url}/webhooks/twilio/inbound/",
        from_="+14155550142",
        to=FROM,
        body="Stop.",
        auth_token=twilio_emulator.AUTH_TOKEN,
    )
    process_pending()
    dispatcher.dispatch_due()

    assert status == 200
    assert ChannelOptOut.objects.filter(customer=customer, channel="sms").exists()
    assert InboundMessage.objects.get().outcome == "opted_out"
    [confirmation] = Message.objects.filter(template__key="keyword-reply")
    assert confirmation.status == MessageStatus.SENT
    [sent] = [m for m in twilio_emulator.state(emulator).messages if m["to"] == "+14155550142"]
    assert "START" in sent["body"]
    # Marketing to this number is now held by consent, not sent.
    promo = queue(customer, make_template(topic=promos), channel="sms")
    dispatcher.dispatch_due()
    promo.refresh_from_db()
    assert promo.status == MessageStatus.SUPPRESSED


def test_a_forged_inbound_stop_changes_nothing(wired):
    emulator, server = wired
    customer = make_customer(phone="+14155550143")

    status, _body = twilio_emulator.send_inbound(
        emulator,
        url=f"{server.url}/webhooks/twilio/inbound/",
        from_="+14155550143",
        to=FROM,
        body="STOP",
        auth_token="someone-elses-token",
    )
    process_pending()

    assert status == 403
    assert not ChannelOptOut.objects.filter(customer=customer).exists()


@pytest.fixture
def sendgrid_wired(settings, live_server):
    with ProviderEmulator() as server:
        sendgrid_emulator.install(server)
        signer = sendgrid_emulator.EventSigner()
        settings.SENDGRID_WEBHOOK_PUBLIC_KEY = signer.public_key
        settings.CHANNEL_ADAPTERS = locmem_adapters() | {
            "email": {
                "BACKEND": "channels.adapters.sendgrid.SendGridAdapter",
                "OPTIONS": {
                    "api_key": "SG.test-key",
                    "from_email": "Stride Running <hello@example.com>",
                    "base_url": server.url,
                    "timeout": 2,
                },
            }
        }
        hook = sendgrid_emulator.post_events_to(
            server,
            f"{live_server.url}/webhooks/sendgrid/events/",
            signer,
            outcomes={"gone@example.com": ("processed", "bounce")},
        )
        yield hook


def test_sendgrid_events_deliver_one_mail_and_suppress_a_bounced_address(sendgrid_wired):
    hook = sendgrid_wired
    template = make_template(topic=make_topic("promos"))
    delivered = queue(make_customer(email="alex@example.com"), template, channel="email")
    bounced = queue(make_customer(email="gone@example.com"), template, channel="email")

    dispatcher.dispatch_due()
    hook.wait()
    process_pending()

    assert [status for status, _events in hook.posted] == [200, 200]
    delivered.refresh_from_db()
    bounced.refresh_from_db()
    assert delivered.status == MessageStatus.DELIVERED
    assert bounced.status == MessageStatus.BOUNCED
    assert Suppression.objects.get().address_hash == address_hash("email", "gone@example.com")
    # Every event SendGrid posted carried our message id and nothing personal besides.
    for _status, events in hook.posted:
        assert {e["message_id"] for e in events} <= {str(delivered.id), str(bounced.id)}


CONTENT_SID = "HX" + "ab" * 16


def test_whatsapp_window_closed_after_the_send_is_resent_as_the_approved_template(wired, settings):
    emulator, server = wired
    settings.CHANNEL_ADAPTERS = settings.CHANNEL_ADAPTERS | {
        "whatsapp": {
            "BACKEND": "channels.adapters.twilio_whatsapp.TwilioWhatsAppAdapter",
            "OPTIONS": {
                "account_sid": twilio_emulator.ACCOUNT_SID,
                "auth_token": twilio_emulator.AUTH_TOKEN,
                "from_number": "+14155238886",
                "base_url": emulator.url,
                "status_callback": f"{server.url}/webhooks/twilio/status/",
                "timeout": 2,
            },
        }
    }
    customer = make_customer(whatsapp="+14155550150", attributes={"first_name": "Alex"})
    # Our records say the customer wrote recently; WhatsApp's window has in fact closed.
    InboundMessage.objects.create(
        provider="twilio",
        channel="whatsapp",
        provider_message_id="SM-old",
        customer=customer,
        from_address="+14155550150",
        body="thanks",
        outcome="reply",
        received_at=timezone.now() - dt.timedelta(hours=2),
    )
    template = make_template(
        topic=make_topic("appointments", kind="transactional", channels=["whatsapp"]),
        variants={
            ("whatsapp", "en"): {
                "body": "Hi {{ customer.first_name }}, see you tomorrow at 10:00.",
                "provider_options": {
                    "content_sid": CONTENT_SID,
                    "content_variables": {"1": "{{ customer.first_name }}"},
                },
            }
        },
    )
    message = queue(customer, template, channel="whatsapp")

    dispatcher.dispatch_due()  # a session message: Twilio takes it, then fails it (63016)
    twilio_emulator.wait_idle(emulator, timeout=5)
    process_pending()
    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED

    dispatcher.dispatch_due()  # now the window is known to be closed: the template goes
    twilio_emulator.wait_idle(emulator, timeout=5)
    process_pending()

    message.refresh_from_db()
    assert message.status == MessageStatus.OPENED  # delivered, then WhatsApp's read receipt
    first, second = [r.form() for r in emulator.requests_to("/2010-04-01/")]
    assert first["Body"] == ["Hi Alex, see you tomorrow at 10:00."] and "ContentSid" not in first
    assert second["ContentSid"] == [CONTENT_SID] and "Body" not in second
    assert second["ContentVariables"] == ['{"1": "Alex"}']
    codes = list(message.history.values_list("code", flat=True))
    assert "twilio:63016" in codes and "whatsapp:template_retry" in codes
