"""Topic digests: a customer on a daily digest has a digestible topic's messages held
and sent as one message at their local time; nothing is lost or doubled."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from channels.adapters import locmem
from orchestrator.consent.models import ConsentRecord, DigestPreference
from orchestrator.consent.preferences import (
    preferences_changes_from_document,
    preferences_get,
    preferences_update,
)
from orchestrator.delivery import dispatcher
from orchestrator.delivery.digests import digests_build_due
from orchestrator.delivery.models import Digest, Message, MessageEvent, MessageStatus
from orchestrator.delivery.services import messages_cancel
from tests.delivery.factories import (
    locmem_adapters,
    make_customer,
    make_template,
    make_topic,
    queue,
)

pytestmark = pytest.mark.django_db

TOKYO = dt.timezone(dt.timedelta(hours=9))
# Monday 2026-03-02 10:00 in Tokyo.
MONDAY_10 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=TOKYO)


@pytest.fixture(autouse=True)
def _adapters(settings):
    settings.CHANNEL_ADAPTERS = locmem_adapters()
    locmem.clear()


def _choose(customer, topic, cadence, time="20:00", weekday=None, source="api"):
    return preferences_update(
        customer=customer,
        changes=preferences_changes_from_document(
            {"digests": {topic.key: {"cadence": cadence, "time": time, "weekday": weekday}}}
        ),
        source=source,
    )


def _setup():
    topic = make_topic("order-updates", digestible=True)
    template = make_template(topic=topic)
    customer = make_customer(timezone="Asia/Tokyo")
    return topic, template, customer


def test_a_daily_digest_holds_each_message_and_sends_one_at_the_local_time():
    topic, template, customer = _setup()
    with time_machine.travel(MONDAY_10, tick=False):
        _choose(customer, topic, "daily")
        held = [queue(customer, template, data={"item": f"parcel {i}"}) for i in range(3)]
        for message in held:
            message.refresh_from_db()
            assert message.status == MessageStatus.HELD
            assert "held for your daily digest (20:00)" in message.explanation[-1]["reason"]
        dispatcher.dispatch_due()
        assert locmem.outbox == []
        # Not yet due: nothing is built.
        assert digests_build_due().digests == 0
    with time_machine.travel(MONDAY_10.replace(hour=20, minute=1), tick=False):
        stats = digests_build_due()
        assert (stats.digests, stats.folded) == (1, 3)
        dispatcher.dispatch_due()
    assert len(locmem.outbox) == 1
    sent = locmem.outbox[0]
    for i in range(3):
        assert f"parcel {i}" in sent.body
    assert "3 updates" in sent.body
    digest = Digest.objects.get()
    assert digest.status == Digest.Status.SENT
    assert digest.due_at == MONDAY_10.replace(hour=20)
    for message in Message.objects.filter(id__in=[m.id for m in held]):
        assert message.status == MessageStatus.CANCELED
        assert (
            f"folded into digest message #{digest.message_id}" in message.explanation[-1]["reason"]
        )
        assert message.history.filter(code="digested").count() == 1
    # Built again: nothing more goes.
    with time_machine.travel(MONDAY_10 + dt.timedelta(days=2), tick=False):
        assert digests_build_due().digests == 0


def test_a_message_after_the_digest_went_opens_the_next_one():
    topic, template, customer = _setup()
    with time_machine.travel(MONDAY_10, tick=False):
        _choose(customer, topic, "daily")
        queue(customer, template)
    with time_machine.travel(MONDAY_10.replace(hour=21), tick=False):
        digests_build_due()
        late = queue(customer, template)
        late.refresh_from_db()
    assert late.status == MessageStatus.HELD
    assert late.digest.due_at == MONDAY_10.replace(hour=20) + dt.timedelta(days=1)
    assert Digest.objects.filter(status="open").count() == 1


def test_a_weekly_digest_is_due_on_the_chosen_weekday():
    topic, template, customer = _setup()
    with time_machine.travel(MONDAY_10, tick=False):
        _choose(customer, topic, "weekly", time="09:00", weekday="friday")
        message = queue(customer, template)
    message.refresh_from_db()
    assert message.digest.due_at == dt.datetime(2026, 3, 6, 9, 0, tzinfo=TOKYO)
    assert "weekly digest (Friday 09:00)" in message.explanation[-1]["reason"]


def test_as_it_happens_and_other_topics_are_not_held():
    topic, template, customer = _setup()
    other = make_template(topic=make_topic("promos"))
    _choose(customer, topic, "daily")
    assert queue(customer, other).status == MessageStatus.QUEUED
    _choose(customer, topic, "immediate")
    assert queue(customer, template).status == MessageStatus.QUEUED
    someone = make_customer()
    assert queue(someone, template).status == MessageStatus.QUEUED


def test_the_cadence_is_in_the_document_and_one_ledger_row_per_change():
    topic, _template, customer = _setup()
    make_topic("not-digestible")
    document = preferences_get(customer=customer)
    assert document["digests"] == {
        "order-updates": {"cadence": "immediate", "time": "08:00", "weekday": None}
    }
    rows = _choose(customer, topic, "weekly", time="07:30", weekday="sunday", source="api")
    assert len(rows) == 1
    assert rows[0].action == ConsentRecord.Action.PREFERENCES
    assert rows[0].topic == topic
    assert rows[0].evidence["changed"]["digest"] == {
        "from": {"cadence": "immediate", "time": "08:00", "weekday": None},
        "to": {"cadence": "weekly", "time": "07:30", "weekday": "sunday"},
    }
    # The same again writes nothing.
    assert _choose(customer, topic, "weekly", time="07:30", weekday="sunday") == []
    assert preferences_get(customer=customer)["digests"]["order-updates"]["weekday"] == "sunday"
    assert DigestPreference.objects.get().weekday == 6


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"digests": {"order-updates": {"cadence": "hourly"}}}, "digests.order-updates.cadence"),
        ({"digests": {"order-updates": {"cadence": "weekly"}}}, "digests.order-updates.weekday"),
        (
            {"digests": {"order-updates": {"cadence": "daily", "weekday": "monday"}}},
            "digests.order-updates.weekday",
        ),
        ({"digests": {"promos": {"cadence": "daily"}}}, "digests.promos"),
        ({"digests": {"order-updates": {"cadence": "daily", "time": "8am"}}}, None),
    ],
)
def test_a_wrong_digest_choice_is_refused_with_its_field(document, field):
    from django.core.exceptions import ValidationError

    make_topic("order-updates", digestible=True)
    make_topic("promos")
    with pytest.raises(ValidationError) as caught:
        preferences_changes_from_document(document)
    fields = caught.value.message_dict
    assert field in fields if field else any(k.endswith(".time") for k in fields)


def test_a_held_message_canceled_before_the_digest_is_left_out():
    topic, template, customer = _setup()
    with time_machine.travel(MONDAY_10, tick=False):
        _choose(customer, topic, "daily")
        kept = queue(customer, template, data={"item": "kept"})
        dropped = queue(customer, template, data={"item": "dropped"})
        assert messages_cancel(message_ids=[dropped.id], reason="journey exit") == [dropped.id]
    with time_machine.travel(MONDAY_10.replace(hour=20, minute=1), tick=False):
        assert digests_build_due().folded == 1
        dispatcher.dispatch_due()
    assert "kept" in locmem.outbox[0].body
    assert "dropped" not in locmem.outbox[0].body
    assert Message.objects.get(id=kept.id).status == MessageStatus.CANCELED


def test_a_digest_whose_messages_all_went_closes_empty():
    topic, template, customer = _setup()
    with time_machine.travel(MONDAY_10, tick=False):
        _choose(customer, topic, "daily")
        message = queue(customer, template)
        messages_cancel(message_ids=[message.id], reason="not needed")
    with time_machine.travel(MONDAY_10.replace(hour=20, minute=1), tick=False):
        stats = digests_build_due()
    assert (stats.digests, stats.empty) == (0, 1)
    assert Digest.objects.get().status == Digest.Status.EMPTY
    assert not MessageEvent.objects.filter(code="digested").exists()


def test_the_digest_is_written_in_japanese_for_a_japanese_customer():
    topic, template, customer = _setup()
    topic.names = {"ja": "注文のお知らせ"}
    topic.save()
    customer.locale = "ja"
    customer.save()
    with time_machine.travel(MONDAY_10, tick=False):
        _choose(customer, topic, "daily")
        queue(customer, template)
        queue(customer, template)
    with time_machine.travel(MONDAY_10.replace(hour=20, minute=1), tick=False):
        digests_build_due()
        dispatcher.dispatch_due()
    assert "注文のお知らせ" in locmem.outbox[0].body
    assert "2件" in locmem.outbox[0].body
    assert timezone.now()
