"""What the dispatcher tells chat adapters: the WhatsApp window and template, LINE kinds."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import InboundMessage, MessageStatus
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db

CONTENT_SID = "HX" + "0" * 32


def whatsapp_template():
    return make_template(
        topic=make_topic("reminders", kind="transactional", channels=["whatsapp", "line"]),
        variants={
            ("whatsapp", "en"): {
                "body": "Hi {{ customer.first_name }}, see you at {{ data.time }}.",
                "provider_options": {
                    "content_sid": CONTENT_SID,
                    "content_variables": {"1": "{{ customer.first_name }}", "2": "{{ data.time }}"},
                },
            },
            ("line", "en"): {
                "body": "See you at {{ data.time }}",
                "provider_options": {
                    "kind": "template",
                    "alt_text": "Appointment at {{ data.time }}",
                    "title": "Your appointment",
                    "text": "{{ data.time }}",
                    "actions": [{"label": "Confirm", "text": "1"}],
                },
            },
        },
    )


def wrote_in(customer, hours_ago: float):
    InboundMessage.objects.create(
        provider="twilio",
        channel="whatsapp",
        provider_message_id=f"SM{customer.id}-{hours_ago}",
        customer=customer,
        from_address=customer.whatsapp,
        body="hello",
        outcome="reply",
        received_at=timezone.now() - dt.timedelta(hours=hours_ago),
    )


def test_whatsapp_messages_carry_the_window_and_the_rendered_template(outbox):
    template = whatsapp_template()
    inside = make_customer(attributes={"first_name": "Aiko"}, whatsapp="+819012340001")
    outside = make_customer(attributes={"first_name": "Alex"}, whatsapp="+14155550002")
    wrote_in(inside, hours_ago=2)
    wrote_in(outside, hours_ago=30)
    for customer in (inside, outside):
        queue(customer, template, channel="whatsapp", data={"time": "10:00"})

    dispatcher.dispatch_due()

    sent = {m.to: m.metadata["whatsapp"] for m in outbox}
    assert sent["+819012340001"] == {
        "session_open": True,
        "content_sid": CONTENT_SID,
        "content_variables": {"1": "Aiko", "2": "10:00"},
    }
    assert sent["+14155550002"]["session_open"] is False


def test_line_messages_carry_the_rendered_kind(outbox):
    customer = make_customer(line_user_id="U" + "a" * 32)
    message = queue(customer, whatsapp_template(), channel="line", data={"time": "15:30"})

    dispatcher.dispatch_due()

    [sent] = outbox
    assert sent.metadata["line"]["alt_text"] == "Appointment at 15:30"
    assert sent.metadata["line"]["actions"] == [{"label": "Confirm", "text": "1"}]
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT


def test_a_broken_option_template_fails_the_message_before_any_send(outbox):
    template = make_template(
        topic=make_topic("t", kind="transactional", channels=["whatsapp"]),
        variants={
            ("whatsapp", "en"): {
                "body": "hi",
                "provider_options": {"content_variables": {"1": "{{ data.missing }}"}},
            }
        },
    )
    message = queue(make_customer(whatsapp="+14155550003"), template, channel="whatsapp")

    dispatcher.dispatch_due()

    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert "provider_options" in message.last_error
    assert outbox == []


@pytest.mark.parametrize(
    ("channel", "options", "problem"),
    [
        ("whatsapp", {}, ""),
        ("whatsapp", {"content_sid": CONTENT_SID, "content_variables": {"1": "{{ x }}"}}, ""),
        ("whatsapp", {"content_sid": "HX123"}, "content_sid must be"),
        ("whatsapp", {"content_sid": CONTENT_SID, "content_variables": {"1": 2}}, "map"),
        ("whatsapp", {"content_sid": CONTENT_SID, "body": "x"}, "takes content_sid"),
        ("whatsapp", {"content_sid": CONTENT_SID, "content_variables": {"1": "{{"}}, "Liquid"),
        ("line", {"kind": "flex", "alt_text": "{{ data.x }}", "contents": {}}, ""),
        ("line", {"alt_text": "x"}, '"kind"'),
        ("sms", {"kind": "flex"}, "take no provider options"),
        ("line", ["not", "an", "object"], "JSON object"),
    ],
)
def test_the_admin_refuses_provider_options_that_cannot_work(channel, options, problem):
    from orchestrator.delivery.template_services import provider_options_problem

    found = provider_options_problem(channel, options)
    assert (problem in found) if problem else found == ""
