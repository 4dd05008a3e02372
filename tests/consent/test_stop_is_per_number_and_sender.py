"""A STOP is kept per (number, channel, our sender) and checked at send time in one query."""

from __future__ import annotations

import pytest

from orchestrator.consent.channel_consent import (
    number_opt_in,
    number_opt_out,
    stop_confirmation_allow,
)
from orchestrator.consent.models import ChannelOptOut, ConsentRecord, Suppression, address_hash
from orchestrator.consent.selectors import ConsentRequest, consent_decisions
from orchestrator.consent.suppressions import suppressions_add
from tests.delivery.factories import locmem_adapters, make_customer, make_topic

pytestmark = pytest.mark.django_db

FROM = "+15005550006"
OTHER = "+15005550010"
NUMBER = "+14155550188"


@pytest.fixture
def sms_from(settings):
    settings.CHANNEL_ADAPTERS = locmem_adapters(sms={"from_number": FROM})


@pytest.fixture
def topics():
    return make_topic("promos"), make_topic("orders", kind="transactional")


def stop(sender: str = FROM, address: str = NUMBER) -> Suppression | None:
    return number_opt_out(
        channel="sms",
        address=address,
        sender=sender,
        source=ConsentRecord.Source.INBOUND_KEYWORD,
        evidence={"inbound_message_id": "SM1", "text": "STOP"},
        detail="inbound STOP SM1",
    )


def start(sender: str = FROM) -> bool:
    return number_opt_in(
        channel="sms",
        address=NUMBER,
        sender=sender,
        source=ConsentRecord.Source.INBOUND_KEYWORD,
        evidence={"inbound_message_id": "SM2", "text": "START"},
    )


def allowed(customers, topics, message_id=None) -> list[bool]:
    requests = [
        ConsentRequest(c.id, t.id, "sms", c.address_for("sms"), message_id)
        for c in customers
        for t in topics
    ]
    return [d.allowed for d in consent_decisions(requests)]


def test_a_stop_to_our_sender_holds_for_every_record_and_every_topic(sms_from, topics):
    holders = [make_customer(phone=NUMBER) for _ in range(3)]
    bystander = make_customer(phone="+14155550189")

    assert stop() is not None
    assert stop() is None  # a repeat changes nothing
    later = make_customer(phone=NUMBER)

    assert allowed([*holders, later], topics) == [False] * 8
    assert allowed([bystander], topics) == [True, True]
    records = ConsentRecord.objects.filter(action="opt_out").order_by("customer_id")
    assert [r.customer_id for r in records] == [c.id for c in holders]
    assert {r.evidence["sender"] for r in records} == {FROM}
    assert {r.evidence["address_hash"] for r in records} == {address_hash("sms", NUMBER)}
    # Their preference pages say so: the STOP went to the sender the channel sends from.
    assert ChannelOptOut.objects.filter(customer__in=holders, channel="sms").count() == 3


def test_a_stop_to_another_sender_does_not_hold_for_ours(sms_from, topics):
    holders = [make_customer(phone=NUMBER) for _ in range(2)]

    assert stop(sender=OTHER) is not None

    assert allowed(holders, topics) == [True] * 4
    assert not ChannelOptOut.objects.exists()
    assert ConsentRecord.objects.filter(action="opt_out").count() == 2  # the evidence is kept


def test_through_a_messaging_service_a_stop_to_any_of_our_numbers_holds(settings, topics):
    # The service's numbers are not known here: none is assumed to be another sender.
    settings.CHANNEL_ADAPTERS = locmem_adapters(sms={"messaging_service_sid": "MG" + "a" * 32})
    customer = make_customer(phone=NUMBER)
    stop(sender=OTHER)
    assert allowed([customer], topics) == [False, False]


def test_only_the_stops_own_confirmation_goes_through_it(sms_from, topics):
    customer = make_customer(phone=NUMBER)
    row = stop()
    stop_confirmation_allow(suppression_id=row.id, message_id=4242)

    assert allowed([customer], topics[1:], message_id=4242) == [True]
    assert allowed([customer], topics[1:], message_id=4243) == [False]
    assert allowed([customer], topics[1:]) == [False]
    # A bounce on the number holds for the confirmation too.
    suppressions_add([("sms", NUMBER, "invalid", "twilio 30006")])
    [decision] = consent_decisions([ConsentRequest(customer.id, topics[1].id, "sms", NUMBER, 4242)])
    assert not decision.allowed and decision.details == {"suppression": "invalid"}


def test_start_lifts_exactly_the_stop_to_that_sender(sms_from, topics):
    holders = [make_customer(phone=NUMBER) for _ in range(2)]
    stop()
    stop(sender=OTHER)
    suppressions_add([("sms", "+14155550199", "erased", "erasure")])

    assert start() is True
    assert start() is False

    assert allowed(holders, topics) == [True] * 4
    left = set(Suppression.objects.values_list("sender", "reason"))
    assert left == {(OTHER, "stop"), ("", "erased")}
    assert not ChannelOptOut.objects.exists()
    opt_ins = ConsentRecord.objects.filter(action="opt_in")
    assert sorted(r.customer_id for r in opt_ins) == [c.id for c in holders]


def test_start_does_not_lift_a_bounce_or_an_erasure(sms_from, topics):
    customer = make_customer(phone=NUMBER)
    suppressions_add([("sms", NUMBER, "invalid", "twilio 21211")])
    assert start() is False
    assert allowed([customer], topics) == [False, False]


def test_a_carrier_stop_is_keyed_on_the_sender_and_in_every_holders_ledger(sms_from, topics):
    holders = [make_customer(phone=NUMBER) for _ in range(2)]

    assert suppressions_add([("sms", NUMBER, "stop", "twilio twilio:21610")]) == 1
    assert suppressions_add([("sms", NUMBER, "stop", "twilio twilio:21610")]) == 0

    row = Suppression.objects.get()
    assert (row.reason, row.sender) == ("stop", FROM)
    assert "+1415" not in row.detail
    records = ConsentRecord.objects.filter(action="opt_out", source="provider")
    assert sorted(r.customer_id for r in records) == [c.id for c in holders]
    assert allowed(holders, topics) == [False] * 4


def test_the_send_time_check_is_one_query_per_batch(sms_from, topics, django_assert_num_queries):
    customers = [make_customer(phone=f"+1415555{n:04d}") for n in range(40)]
    for customer in customers[::3]:
        stop(address=customer.phone)
    promos, orders = topics
    requests = [
        ConsentRequest(c.id, t.id, "sms", c.phone, n)
        for n, c in enumerate(customers)
        for t in (promos, orders)
    ]
    loaded = {promos.id: promos, orders.id: orders}

    with django_assert_num_queries(2):  # suppressions, then subscriptions and opt-outs
        decisions = consent_decisions(requests, topics=loaded)

    blocked = {r.customer_id for r, d in zip(requests, decisions, strict=True) if not d.allowed}
    assert blocked == {c.id for c in customers[::3]}
