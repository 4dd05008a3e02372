"""Stored webhook events become state: statuses move forward only, dead addresses are
suppressed, keywords change consent with one confirmation, replies become events."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from channels.webhooks.models import WebhookEvent
from channels.webhooks.processing import process_pending
from orchestrator.audience.models import Event
from orchestrator.consent.models import ChannelOptOut, ConsentRecord, Suppression, address_hash
from orchestrator.consent.selectors import ConsentRequest, consent_decisions
from orchestrator.delivery.models import InboundMessage, Message, MessageStatus
from tests.delivery.factories import make_customer, make_template, make_topic, queue
from tests.webhooks.conftest import line_post, sendgrid_post, twilio_post

pytestmark = pytest.mark.django_db

S = MessageStatus


def handed_off(message, *, provider="twilio", sid="", minutes_ago=10, status=S.SENT):
    Message.objects.filter(id=message.id).update(
        status=status,
        provider=provider,
        provider_message_id=sid,
        to_address=message.customer.address_for(message.channel),
        handed_off_at=timezone.now() - dt.timedelta(minutes=minutes_ago),
        sent_at=timezone.now() - dt.timedelta(minutes=minutes_ago) if status == S.SENT else None,
    )
    message.refresh_from_db()
    return message


def twilio_status(client, message, status, *, sid, error_code=None):
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC" + "1" * 32,
        "MessageStatus": status,
        "SmsStatus": status,
        "To": message.to_address,
        "From": "+15005550006",
    }
    if error_code:
        params["ErrorCode"] = str(error_code)
    response = twilio_post(client, f"/webhooks/twilio/status/?m={message.id}", params)
    assert response.status_code == 204


@pytest.fixture
def sms(db):
    customer = make_customer(phone="+14155550111")
    return queue(customer, make_template(topic=make_topic()), channel="sms")


def test_out_of_order_statuses_never_move_a_message_back(client, secrets_configured, sms):
    sid = "SM" + "c" * 32
    message = handed_off(sms, sid=sid)
    twilio_status(client, message, "delivered", sid=sid)
    twilio_status(client, message, "sent", sid=sid)  # late
    twilio_status(client, message, "delivered", sid=sid)  # repeated

    stats = process_pending()

    assert stats.statuses == 2
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    codes = list(message.history.filter(code__startswith="twilio").values_list("code", "status"))
    # The history keeps what was reported, in arrival order; the status did not regress.
    assert codes == [("twilio:delivered", "delivered"), ("twilio:sent", "sent")]
    assert process_pending().statuses == 0  # nothing left


def test_an_unknown_outcome_is_reconciled_from_the_status_report(client, secrets_configured, sms):
    sid = "SM" + "d" * 32
    message = handed_off(sms, sid="", status=S.SENDING, minutes_ago=10)  # timed out

    twilio_status(client, message, "delivered", sid=sid)
    process_pending()

    message.refresh_from_db()
    assert (message.status, message.provider_message_id) == (S.DELIVERED, sid)
    assert message.sent_at is not None and message.handed_off_at is None


def test_a_report_for_a_send_still_being_recorded_waits_for_the_dispatcher(
    client, secrets_configured, sms
):
    sid = "SM" + "e" * 32
    message = handed_off(sms, sid="", status=S.SENDING, minutes_ago=0)
    twilio_status(client, message, "delivered", sid=sid)

    stats = process_pending()

    assert stats.waiting == 1
    message.refresh_from_db()
    assert message.status == S.SENDING
    event = WebhookEvent.objects.get()
    assert event.processed_at is None and event.attempts == 1


def test_a_report_about_another_send_is_not_applied(client, secrets_configured, sms):
    message = handed_off(sms, sid="SM" + "1" * 32)
    twilio_status(client, message, "failed", sid="SM" + "2" * 32)

    stats = process_pending()

    assert stats.errors == 1
    message.refresh_from_db()
    assert message.status == S.SENT
    assert "was sent as" in WebhookEvent.objects.get().error


def test_undelivered_to_a_dead_number_suppresses_it(client, secrets_configured, sms):
    sid = "SM" + "f" * 32
    message = handed_off(sms, sid=sid)
    twilio_status(client, message, "undelivered", sid=sid, error_code=30006)

    process_pending()

    message.refresh_from_db()
    assert message.status == S.UNDELIVERED
    assert "30006" in message.last_error
    suppression = Suppression.objects.get()
    assert suppression.reason == "invalid"
    assert suppression.address_hash == address_hash("sms", "+14155550111")


def _email(customer=None):
    customer = customer or make_customer(email="runner@example.com")
    message = queue(customer, make_template(topic=make_topic()), channel="email")
    return handed_off(message, provider="sendgrid", sid="x-msg-id-1")


def _sg(message, kind, **fields):
    return {
        "email": message.to_address,
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": f"{kind}-{message.id}-{len(fields)}",
        "sg_message_id": "x-msg-id-1.filter-1",
        "message_id": str(message.id),
        **fields,
    }


def test_sendgrid_engagement_moves_forward_and_a_bounce_suppresses(client, secrets_configured):
    opened = _email()
    bounced = _email(make_customer(email="gone@example.com"))
    events = [
        _sg(opened, "click", url="https://stride.example.com/shoes"),
        _sg(opened, "open"),
        _sg(opened, "delivered"),
        _sg(bounced, "bounce", type="bounce", reason="550 5.1.1 no such user"),
    ]
    assert sendgrid_post(client, events, secrets_configured).status_code == 200

    process_pending()

    opened.refresh_from_db()
    bounced.refresh_from_db()
    assert opened.status == S.CLICKED
    assert bounced.status == S.BOUNCED
    [suppression] = Suppression.objects.all()
    assert suppression.reason == "bounce"
    assert suppression.address_hash == address_hash("email", "gone@example.com")


def test_a_blocked_bounce_is_undelivered_without_suppressing(client, secrets_configured):
    message = _email()
    sendgrid_post(
        client, [_sg(message, "bounce", type="blocked", reason="IP reputation")], secrets_configured
    )
    process_pending()
    message.refresh_from_db()
    assert message.status == S.UNDELIVERED
    assert not Suppression.objects.exists()


def test_a_spam_complaint_suppresses_even_transactional_email(client, secrets_configured):
    message = _email()
    sendgrid_post(client, [_sg(message, "spamreport")], secrets_configured)
    process_pending()

    assert Suppression.objects.get().reason == "complaint"
    receipt = make_topic("receipts", kind="transactional")
    [decision] = consent_decisions(
        [ConsentRequest(message.customer_id, receipt.id, "email", message.to_address)]
    )
    assert not decision.allowed and decision.code == "suppressed"


def test_sendgrid_unsubscribe_opts_out_of_email_marketing(client, secrets_configured):
    message = _email()
    sendgrid_post(client, [_sg(message, "group_unsubscribe")], secrets_configured)
    process_pending()
    assert ChannelOptOut.objects.filter(customer=message.customer, channel="email").exists()


# --- inbound ----------------------------------------------------------------------


def inbound(client, body, *, sender="+14155550111", sid=None, channel="sms"):
    params = {
        "MessageSid": sid or f"SM{abs(hash((body, sender, time.time_ns()))):032x}"[:34],
        "AccountSid": "AC" + "1" * 32,
        "From": f"whatsapp:{sender}" if channel == "whatsapp" else sender,
        "To": "whatsapp:+15005550006" if channel == "whatsapp" else "+15005550006",
        "Body": body,
        "NumMedia": "0",
        "SmsStatus": "received",
    }
    response = twilio_post(client, "/webhooks/twilio/inbound/", params)
    assert response.status_code == 200
    process_pending()
    return params["MessageSid"]


def _marketing_allowed(customer, topic, channel="sms") -> tuple[bool, str]:
    [decision] = consent_decisions(
        [ConsentRequest(customer.id, topic.id, channel, customer.address_for(channel))]
    )
    return decision.allowed, decision.code


def confirmations(customer):
    return list(
        Message.objects.filter(customer=customer, template__key="keyword-reply").order_by("id")
    )


@pytest.mark.parametrize(
    "text",
    [
        "stop",
        "Stop.",
        "\uff33\uff34\uff2f\uff30",
        "\uff33\uff34\uff2f\uff30\uff01",
        "STOP!",
        "停止",
        "配信停止",
        "REVOKE",
    ],
)
def test_stop_variants_opt_out_of_marketing_with_one_confirmation(client, secrets_configured, text):
    customer = make_customer(phone="+14155550111")
    promo = make_topic("promos")

    inbound(client, text)
    inbound(client, text)  # said twice: still one confirmation

    assert _marketing_allowed(customer, promo) == (False, "suppressed")
    record = ConsentRecord.objects.get(customer=customer)
    assert (record.action, record.source, record.channel) == ("opt_out", "inbound_keyword", "sms")
    assert record.evidence["text"] == text
    assert record.evidence["sender"] == "+15005550006"
    assert record.evidence["address"] == "+14*****0111"
    [confirmation] = confirmations(customer)
    assert confirmation.channel == "sms" and confirmation.priority == 9
    assert "START" in confirmation.data["text"]
    # STOP stops the sender, transactional messages included (the carrier would refuse them).
    receipt = make_topic("receipts", kind="transactional")
    assert _marketing_allowed(customer, receipt) == (False, "suppressed")
    # A marketing topic created later is covered too.
    assert _marketing_allowed(customer, make_topic("new-drops"))[0] is False


def test_start_after_stop_opts_back_in_and_lifts_a_carrier_stop(client, secrets_configured):
    customer = make_customer(phone="+14155550111", locale="ja")
    promo = make_topic("promos")
    inbound(client, "STOP")
    Suppression.objects.create(
        channel="sms", address_hash=address_hash("sms", "+14155550111"), reason="stop"
    )

    inbound(client, "start")

    assert _marketing_allowed(customer, promo)[0]
    assert not Suppression.objects.exists()
    assert [r.action for r in ConsentRecord.objects.filter(customer=customer).order_by("id")] == [
        "opt_out",
        "opt_in",
    ]
    _stop_reply, start_reply = confirmations(customer)
    assert "配信を再開" in start_reply.data["text"]  # the customer's language


def test_start_does_not_lift_a_bounce_or_complaint(client, secrets_configured):
    make_customer(phone="+14155550111")
    Suppression.objects.create(
        channel="sms", address_hash=address_hash("sms", "+14155550111"), reason="invalid"
    )
    inbound(client, "START")
    assert Suppression.objects.get().reason == "invalid"


def test_help_answers_with_the_help_text(client, secrets_configured):
    customer = make_customer(phone="+14155550111")
    inbound(client, "help?")
    [reply] = confirmations(customer)
    assert "STOP" in reply.data["text"] and "START" in reply.data["text"]
    assert InboundMessage.objects.get().outcome == "help"


def test_confirmations_can_be_left_to_the_provider(client, secrets_configured, settings):
    settings.KEYWORD_CONFIRMATIONS = False
    customer = make_customer(phone="+14155550111")
    inbound(client, "STOP")
    assert ChannelOptOut.objects.filter(customer=customer).exists()
    assert confirmations(customer) == []


def test_a_reply_becomes_an_event_naming_the_message_it_answers(client, secrets_configured, sms):
    message = handed_off(sms, sid="SM" + "9" * 32)
    Message.objects.filter(id=message.id).update(journey="appointment-reminder")

    inbound(client, "1")

    event = Event.objects.get(name="message.replied")
    assert event.customer_id == message.customer_id
    assert event.properties == {
        "body": "1",
        "channel": "sms",
        "message_id": message.id,
        "journey": "appointment-reminder",
    }
    message.refresh_from_db()
    assert message.status == S.REPLIED
    row = InboundMessage.objects.get()
    assert (row.outcome, row.in_reply_to_id) == ("reply", message.id)


def test_a_phrase_starting_with_stop_is_a_reply_not_an_opt_out(client, secrets_configured):
    customer = make_customer(phone="+14155550111")
    inbound(client, "stop sending me trail shoes, I run on roads")
    assert not ChannelOptOut.objects.exists()
    assert Event.objects.get(customer=customer).properties["body"].startswith("stop sending")


def test_the_same_inbound_message_twice_is_handled_once(client, secrets_configured):
    make_customer(phone="+14155550111")
    sid = "SM" + "7" * 32
    inbound(client, "the arch didn't fit", sid=sid)
    WebhookEvent.objects.all().delete()  # as if the row were gone and Twilio retried
    inbound(client, "the arch didn't fit", sid=sid)
    assert Event.objects.filter(name="message.replied").count() == 1


def test_stop_from_an_unknown_number_suppresses_it(client, secrets_configured):
    inbound(client, "STOP", sender="+14155550999")
    assert Suppression.objects.get().address_hash == address_hash("sms", "+14155550999")
    assert InboundMessage.objects.get().customer is None


def test_whatsapp_stop_opts_out_of_whatsapp_only(client, secrets_configured):
    customer = make_customer(phone="+14155550111", whatsapp="+14155550111")
    promo = make_topic("promos", channels=["sms", "whatsapp"])
    inbound(client, "STOP", channel="whatsapp")
    assert _marketing_allowed(customer, promo, "whatsapp")[0] is False
    assert _marketing_allowed(customer, promo, "sms")[0] is True


def _line(kind, user_id, **extra):
    return {
        "type": kind,
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": user_id},
        "webhookEventId": f"01H{kind}{user_id[-8:]}{time.time_ns()}",
        "deliveryContext": {"isRedelivery": False},
        **extra,
    }


def test_line_message_stop_then_unfollow_and_follow(client, secrets_configured):
    user_id = "U" + "4" * 32
    customer = make_customer(line_user_id=user_id)
    promo = make_topic("promos", channels=["line"])
    text = {"id": "5001", "type": "text", "text": "配信停止", "quoteToken": "q"}
    line_post(client, [_line("message", user_id, replyToken="r", message=text)])
    process_pending()
    assert _marketing_allowed(customer, promo, "line") == (False, "channel_opted_out")

    line_post(client, [_line("unfollow", user_id)])
    process_pending()
    assert Suppression.objects.get().reason == "stop"

    line_post(client, [_line("follow", user_id, replyToken="r")])
    process_pending()
    assert not Suppression.objects.exists()
    assert _marketing_allowed(customer, promo, "line")[0]
