"""Channel routing: one rule, and the three places that route agree on it.

Queuing a message (``services``), sending it (the dispatcher) and forecasting it
(journey simulation) must pick the same channel and locale for the same customer
and template.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from journeys import simulation
from orchestrator.consent.channel_consent import channel_opt_out
from orchestrator.consent.models import ChannelPreference, ConsentRecord
from orchestrator.delivery import routing
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import Message
from orchestrator.delivery.services import SendRefused, message_build
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db


def test_the_customers_order_comes_first_then_the_default_channels_they_left_out():
    assert routing.channel_order(["sms", "email"]) == ["sms", "email", "line", "whatsapp"]
    assert routing.channel_order(None) == list(routing.DEFAULT_CHANNEL_ORDER)


@pytest.mark.parametrize(
    ("customer_locale", "available", "picked"),
    [
        ("ja-JP", {"en", "ja-JP", "ja"}, "ja-JP"),
        ("ja_JP", {"en", "ja"}, "ja"),
        ("fr", {"en", "ja"}, "en"),
        ("fr", {"ja", "de"}, "de"),
        ("", {"en"}, "en"),
        ("en", set(), None),
    ],
)
def test_the_locale_is_the_customers_then_its_language_then_english_then_any(
    customer_locale, available, picked
):
    assert routing.pick_locale(customer_locale, available) == picked


def test_preferred_takes_the_first_channel_that_topic_template_and_address_allow():
    addresses = {"email": "", "sms": "+14155550100", "line": "U1"}
    route = routing.resolve_channel(
        "preferred",
        order=routing.channel_order(["email", "line", "sms"]),
        own_order=True,
        topic_channels=["email", "sms", "line"],
        template_channels={"email", "sms"},
        address_for=lambda c: addresses.get(c, ""),
    )
    # No email address; the template has no LINE variant.
    assert route == ("sms", "sms: first reachable channel in the customer's channel order")


def test_consent_picks_the_first_allowed_option_and_keeps_the_rest_as_alternatives():
    no, yes = SimpleNamespace(allowed=False), SimpleNamespace(allowed=True)
    options = [("sms", no), ("email", yes), ("line", yes)]
    assert routing.choose_consented(options) == ("email", yes, ("line",))
    assert routing.choose_consented([("sms", no), ("email", no)]) == ("sms", no, ())


def _template(topic):
    return make_template(
        topic=topic,
        variants={
            ("email", "en"): {"subject": "Hi", "body": "Hello {{ preferences_url }}"},
            ("email", "ja"): {"subject": "こんにちは", "body": "こんにちは {{ preferences_url }}"},
            ("sms", "en"): {"body": "Hello {{ preferences_url }}"},
            ("sms", "ja"): {"body": "こんにちは {{ preferences_url }}"},
            ("line", "en"): {"body": "Hello {{ preferences_url }}"},
        },
    )


def _simulated(customer, template, topic, *, channel="preferred"):
    """The channel and alternatives journey simulation forecasts for one send."""
    customer = type(customer).objects.select_related("preference").get(pk=customer.pk)
    world = SimpleNamespace(
        customers={customer.id: customer},
        topic=topic,
        template_channels={template.key: set(template.variants.values_list("channel", flat=True))},
        notes=set(),
    )
    options = simulation._channel_options(
        world, customer, {"template": template.key, "channel": channel}
    )
    if not options:
        return None
    send = simulation._Send(0, (customer.id, 0), dt.datetime.now(dt.UTC), "s", options, None, 1.0)
    stopped = simulation._consent(world, [send])
    return (send.channel, send.alternatives) if not stopped else ("stopped", stopped[0][1])


@pytest.mark.parametrize("channel", ["preferred", "email"])
def test_services_dispatcher_and_simulation_route_a_customer_the_same_way(channel, outbox):
    topic = make_topic(channels=["email", "sms", "line"])
    template = _template(topic)
    customer = make_customer(locale="ja-JP", line_user_id="")
    ChannelPreference.objects.create(customer=customer, channel_order=["sms", "email"])
    expected = "sms" if channel == "preferred" else "email"

    built = message_build(customer=customer, template=template, channel=channel)
    assert (built.channel, built.locale) == (expected, "ja")

    message = queue(customer, template, channel=channel)
    dispatch_due()
    message.refresh_from_db()
    assert (message.channel, message.rendered["locale"]) == (expected, "ja")
    assert message.rendered["body"].startswith("こんにちは")

    simulated_channel, _alternatives = _simulated(customer, template, topic, channel=channel)
    assert simulated_channel == expected


def test_a_channel_opted_out_after_queuing_gives_way_to_the_next_at_send_and_in_forecast(outbox):
    topic = make_topic(channels=["email", "sms", "line"])
    template = _template(topic)
    customer = make_customer(locale="en", line_user_id="U4f3a")
    ChannelPreference.objects.create(customer=customer, channel_order=["sms", "line", "email"])
    message = queue(customer, template, channel="preferred")
    # Queued on the first reachable channel; consent is decided at send time.
    assert message.channel == "sms"

    channel_opt_out(
        customer_id=customer.id,
        channel="sms",
        source=ConsentRecord.Source.ADMIN,
        evidence={"test": True},
    )
    dispatch_due()
    message.refresh_from_db()

    assert (message.status, message.channel) == ("sent", "line")
    assert _simulated(customer, template, topic) == ("line", ("email",))


def test_a_customer_no_channel_reaches_is_refused_by_services_and_skipped_by_simulation():
    topic = make_topic(channels=["line"])
    template = _template(topic)
    customer = make_customer(line_user_id="")

    with pytest.raises(SendRefused) as refused:
        message_build(customer=customer, template=template, channel="preferred")
    assert refused.value.code == "no_reachable_channel"
    assert _simulated(customer, template, topic) is None
    assert not Message.objects.filter(customer=customer).exists()
