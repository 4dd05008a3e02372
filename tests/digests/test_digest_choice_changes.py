"""A customer changes a digest choice while messages are held for it: through the API or
the preference page alike, "as it happens" sends what was held now (several as one last
digest, a single one on its own), a new cadence, time or time zone re-times the open
digest, and each held message's trail says why, citing the ledger row."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.test import Client
from rest_framework.test import APIClient

from channels.adapters import locmem
from orchestrator.consent import preferences
from orchestrator.consent.models import ConsentRecord, DigestPreference
from orchestrator.consent.preferences import preferences_changes_from_document, preferences_update
from orchestrator.consent.tokens import preference_token
from orchestrator.delivery import dispatcher
from orchestrator.delivery.digests import digests_build_due
from orchestrator.delivery.models import Digest, Message, MessageStatus
from orchestrator.delivery.selectors import customer_explanation
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.delivery.factories import queue as queue_message
from tests.preferences.test_preference_center import form_data

pytestmark = pytest.mark.django_db

TOKYO = dt.timezone(dt.timedelta(hours=9))
# Monday 2026-03-02 10:00 in Tokyo.
MONDAY_10 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=TOKYO)


@pytest.fixture(autouse=True)
def _adapters(settings):
    settings.CHANNEL_ADAPTERS = locmem_adapters()
    locmem.clear()


@pytest.fixture
def held():
    """A Tokyo customer on a daily 20:00 digest of order updates, with ``n`` held."""

    def make(n: int):
        topic = make_topic("order-updates", digestible=True, channels=["email"])
        template = make_template(topic=topic)
        customer = make_customer("kenta", timezone="Asia/Tokyo")
        _choose(customer, topic, {"cadence": "daily", "time": "20:00", "weekday": None})
        messages = [
            queue_message(customer, template, data={"item": f"parcel {i}"}) for i in range(n)
        ]
        assert {m.status for m in messages} == {MessageStatus.HELD}
        return topic, template, customer, [m.id for m in messages]

    return make


def _choose(customer, topic, choice, source="api"):
    return preferences_update(
        customer=customer,
        changes=preferences_changes_from_document({"digests": {topic.key: choice}}),
        source=source,
    )


def _through_the_api(api_key_factory, customer, document) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_factory(scopes=['track'])}")
    response = client.patch(
        f"/api/v1/customers/{customer.external_id}/preferences", document, format="json"
    )
    assert response.status_code == 200, response.content


def _through_the_page(customer, **changes) -> None:
    client = Client()
    url = f"/preferences/{preference_token(customer.id)}/"
    page = client.get(url)
    assert page.status_code == 200
    response = client.post(url, form_data(page.context, **changes), HTTP_USER_AGENT="test")
    assert response.status_code == 302, response.content.decode()


def _as_it_happens(door, api_key_factory, customer, topic) -> None:
    if door == "api":
        _through_the_api(
            api_key_factory, customer, {"digests": {topic.key: {"cadence": "immediate"}}}
        )
    else:
        _through_the_page(customer, **{f"digest_{topic.id}": "immediate"})


def _weekly_friday_9(door, api_key_factory, customer, topic) -> None:
    if door == "api":
        choice = {"cadence": "weekly", "time": "09:00", "weekday": "friday"}
        _through_the_api(api_key_factory, customer, {"digests": {topic.key: choice}})
    else:
        _through_the_page(
            customer,
            **{
                f"digest_{topic.id}": "weekly",
                f"digest_{topic.id}_time": "09:00",
                f"digest_{topic.id}_weekday": "4",
            },
        )


@pytest.mark.parametrize("door", ["api", "page"])
def test_as_it_happens_sends_the_held_messages_now_as_one_last_digest(door, held, api_key_factory):
    with time_machine.travel(MONDAY_10, tick=False):
        topic, _template, customer, ids = held(3)
        _as_it_happens(door, api_key_factory, customer, topic)
        record = ConsentRecord.objects.filter(customer=customer, topic=topic).latest("id")
        assert record.evidence["changed"]["digest"]["to"]["cadence"] == "immediate"

        digest = Digest.objects.get()
        assert (digest.status, digest.due_at, digest.cadence) == ("open", MONDAY_10, "immediate")
        for message in Message.objects.filter(id__in=ids):
            assert message.status == MessageStatus.HELD
            last = message.explanation[-1]
            assert last["details"]["consent_record"] == record.pk
            assert last["details"]["released"] is True
            assert "3 held go now, together in one last digest" in last["reason"]
            assert "one last digest" in " ".join(customer_explanation(message))

        stats = digests_build_due()
        assert (stats.digests, stats.folded) == (1, 3)
        dispatcher.dispatch_due()
    assert len(locmem.outbox) == 1
    body = locmem.outbox[0].body
    assert "Your digest of" in body
    assert all(f"parcel {i}" in body for i in range(3))
    digest.refresh_from_db()
    assert digest.status == Digest.Status.SENT
    assert set(Message.objects.filter(id__in=ids).values_list("status", flat=True)) == {
        MessageStatus.CANCELED
    }
    # The next message of the topic goes as it happens.
    with time_machine.travel(MONDAY_10 + dt.timedelta(minutes=5), tick=False):
        later = queue_message(customer, _template)
    assert later.status == MessageStatus.QUEUED


@pytest.mark.parametrize("door", ["api", "page"])
def test_a_single_held_message_goes_on_its_own(door, held, api_key_factory):
    with time_machine.travel(MONDAY_10, tick=False):
        topic, _template, customer, (only,) = held(1)
        _as_it_happens(door, api_key_factory, customer, topic)
        message = Message.objects.get(id=only)
        assert message.status == MessageStatus.QUEUED
        assert message.history.filter(code="digest_released").count() == 1
        assert Digest.objects.get().status == Digest.Status.EMPTY
        assert digests_build_due().digests == 0
        dispatcher.dispatch_due()
    assert len(locmem.outbox) == 1
    assert "parcel 0" in locmem.outbox[0].body
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert "you then chose to get these as they happen" in " ".join(customer_explanation(message))


@pytest.mark.parametrize("door", ["api", "page"])
def test_switching_daily_to_weekly_re_times_the_open_digest(door, held, api_key_factory):
    with time_machine.travel(MONDAY_10, tick=False):
        topic, template, customer, ids = held(2)
        _weekly_friday_9(door, api_key_factory, customer, topic)
        friday_9 = dt.datetime(2026, 3, 6, 9, 0, tzinfo=TOKYO)
        digest = Digest.objects.get()
        assert (digest.status, digest.due_at, digest.cadence) == ("open", friday_9, "weekly")
        record = ConsentRecord.objects.filter(customer=customer, topic=topic).latest("id")
        for message in Message.objects.filter(id__in=ids):
            assert message.status == MessageStatus.HELD
            assert message.explanation[-1]["details"]["consent_record"] == record.pk
            assert (
                "now held for your weekly digest (Friday 09:00)"
                in (message.explanation[-1]["reason"])
            )
            assert "weekly digest (Friday 09:00)" in " ".join(customer_explanation(message))
        # A message after the switch joins the same, re-timed digest.
        later = queue_message(customer, template, data={"item": "parcel late"})
        assert later.digest_id == digest.pk
    # Not built at the old daily time...
    with time_machine.travel(MONDAY_10.replace(hour=20, minute=1), tick=False):
        assert digests_build_due().digests == 0
    # ...but on Friday at 09:00, once, with all three.
    with time_machine.travel(friday_9 + dt.timedelta(minutes=1), tick=False):
        assert digests_build_due().folded == 3
        dispatcher.dispatch_due()
    assert len(locmem.outbox) == 1
    assert "weekly digest" in locmem.outbox[0].body


def test_a_new_time_zone_moves_the_open_digest_with_it(held):
    with time_machine.travel(MONDAY_10, tick=False):
        _topic, _template, customer, ids = held(2)
        rows = preferences_update(
            customer=customer,
            changes=preferences_changes_from_document({"timezone": "Europe/London"}),
            source="preference_center",
        )
    digest = Digest.objects.get()
    # 20:00 in London on Monday (GMT in March).
    assert digest.due_at == dt.datetime(2026, 3, 2, 20, 0, tzinfo=dt.UTC)
    for message in Message.objects.filter(id__in=ids):
        assert message.explanation[-1]["details"]["consent_record"] == rows[0].pk


def test_the_same_choice_again_moves_nothing(held):
    with time_machine.travel(MONDAY_10, tick=False):
        topic, _template, customer, ids = held(2)
        before = {m.id: len(m.explanation) for m in Message.objects.filter(id__in=ids)}
        assert _choose(customer, topic, {"cadence": "daily", "time": "20:00"}) == []
    assert {m.id: len(m.explanation) for m in Message.objects.filter(id__in=ids)} == before


def test_a_journey_digest_is_not_touched_by_a_topic_choice(held):
    with time_machine.travel(MONDAY_10, tick=False):
        topic, _template, customer, _ids = held(1)
        step = Digest.objects.create(
            customer=customer,
            kind=Digest.Kind.JOURNEY,
            key="journey:j:s",
            topic=topic,
            template_key="x",
            cadence="window",
            due_at=MONDAY_10 + dt.timedelta(hours=3),
        )
        _choose(customer, topic, {"cadence": "immediate"})
    step.refresh_from_db()
    assert (step.status, step.due_at) == ("open", MONDAY_10 + dt.timedelta(hours=3))


def test_a_failure_in_the_update_leaves_the_choice_and_the_held_messages_as_they_were(
    held, monkeypatch
):
    def fail(*_args):
        raise RuntimeError("the update fails after the held messages were moved")

    with time_machine.travel(MONDAY_10, tick=False):
        topic, _template, customer, ids = held(3)
        ledger = ConsentRecord.objects.count()
        # Registered after the real listener: it runs once the release is done.
        monkeypatch.setattr(
            preferences, "_digest_listeners", [*preferences._digest_listeners, fail]
        )
        with pytest.raises(RuntimeError):
            _choose(customer, topic, {"cadence": "immediate"})
    assert ConsentRecord.objects.count() == ledger
    assert DigestPreference.objects.get(customer=customer).cadence == "daily"
    digest = Digest.objects.get()
    assert (digest.status, digest.cadence) == ("open", "daily")
    assert digest.due_at == MONDAY_10.replace(hour=20)
    for message in Message.objects.filter(id__in=ids):
        assert message.status == MessageStatus.HELD
        assert "released" not in message.explanation[-1]["details"]


@pytest.mark.parametrize(
    ("lang", "says"),
    [
        ("en", '3 updates are waiting for this digest; "As it happens" sends them now'),
        ("ja", "3件のお知らせがこのまとめ配信を待っています"),
    ],
)
def test_the_page_tells_how_many_wait_for_the_digest(held, lang, says):
    with time_machine.travel(MONDAY_10, tick=False):
        _topic, _template, customer, _ids = held(3)
        url = f"/preferences/{preference_token(customer.id)}/?lang={lang}"
        page = Client().get(url).content.decode()
    assert says in page.replace("&quot;", '"')
