"""The broadcast results page of the analytics admin: per broadcast and A/B variant, the
figures the broadcast's own page shows (the broadcasts selectors), linked from the
admin index's Analytics section and from the broadcast's page."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import time_machine
from django.urls import reverse

from orchestrator.broadcasts.selectors import broadcast_progress, broadcast_results
from orchestrator.broadcasts.services import broadcast_save, broadcast_schedule, broadcasts_sweep
from orchestrator.consent.channel_consent import topic_subscription_set
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import Message, MessageEvent
from tests.delivery.factories import make_customer, make_template, make_topic

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 9, 12, 0, tzinfo=dt.UTC)


def _figure(page: str, name: str) -> int:
    return int(re.search(rf'id="figure-{name}">(\d+)<', page)[1])


@time_machine.travel(NOW, tick=False)
def test_results_page_shows_the_broadcasts_own_figures_per_variant(admin_client, outbox):
    topic = make_topic("newsletter", default_opt_in=False)
    template = make_template("weekly", topic=topic)
    other = make_template("weekly-b", topic=topic)
    customers = [make_customer(f"r{i}") for i in range(40)]
    for c in customers:
        topic_subscription_set(
            customer_id=c.id, topic_id=topic.id, channel="email", subscribed=True,
            source="admin", evidence={"test": True},
        )  # fmt: skip
    broadcast, _ = broadcast_save(
        key="friday",
        fields={"name": "Friday news", "template": template, "topic": topic, "ab_share": 50,
                "data": {"item": "news"},
                "ab_template": other, "ab_wait": dt.timedelta(hours=1)},
    )  # fmt: skip
    broadcast_schedule(broadcast=broadcast)
    broadcasts_sweep()
    # One customer leaves before the send: held by consent at send time.
    leaver = Message.objects.filter(broadcast_id=broadcast.id).first().customer_id
    topic_subscription_set(
        customer_id=leaver, topic_id=topic.id, channel="email", subscribed=False,
        source="admin", evidence={},
    )  # fmt: skip
    dispatch_due(batch_size=100)
    sent_b = Message.objects.filter(broadcast_id=broadcast.id, broadcast_variant="b", status="sent")
    clicked = sent_b.first()
    MessageEvent.objects.create(message=clicked, status="clicked", occurred_at=NOW)
    MessageEvent.objects.create(message=clicked, status="delivered", occurred_at=NOW)

    progress, results = broadcast_progress(broadcast), broadcast_results(broadcast)
    assert progress.held and results.total.clicks == 1 and results.total.delivered == 1

    index = admin_client.get(reverse("admin:index")).content.decode()
    changelist = reverse("admin:analytics_broadcastresults_changelist")
    assert changelist in index
    listing = admin_client.get(changelist).content.decode()
    url = reverse("admin:analytics_broadcastresults_results", args=[broadcast.pk])
    assert url in listing
    manage = reverse("admin:broadcasts_broadcast_manage", args=[broadcast.pk])
    assert url in admin_client.get(manage).content.decode()

    response = admin_client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    assert (
        _figure(page, "audience")
        == progress.total
        == Message.objects.filter(broadcast_id=broadcast.id).count()
    )
    assert _figure(page, "queued") == progress.waiting
    assert _figure(page, "sent") == progress.sent > 0
    assert _figure(page, "failed") == progress.failed
    assert _figure(page, "delivered") == 1
    assert _figure(page, "clicks") == 1
    assert _figure(page, "unsubscribes") == results.total.unsubscribes
    assert _figure(page, "conversions") == results.total.conversions
    for code, n in progress.held.items():
        assert re.search(rf"<td>{re.escape(code)}</td><td class=\"num\">{n}</td>", page)
    rows = re.findall(r'<tr><th scope="row">([A-Z]+)</th><td class="num">(\d+)</td>', page)
    assert rows == [(v.variant.upper(), str(v.messages)) for v in results.variants]
    assert [v for v, _n in rows] == ["A", "B"]


def test_results_page_is_for_staff_who_may_see_broadcasts_and_404_for_none(
    client, django_user_model
):
    topic = make_topic("newsletter")
    broadcast, _ = broadcast_save(
        key="friday",
        fields={"name": "Friday", "template": make_template("weekly", topic=topic), "topic": topic},
    )
    url = reverse("admin:analytics_broadcastresults_results", args=[broadcast.pk])
    staff = django_user_model.objects.create_user("staff", password="x", is_staff=True)
    client.force_login(staff)
    assert client.get(url).status_code == 403
    missing = reverse("admin:analytics_broadcastresults_results", args=[broadcast.pk + 1])
    assert client.get(missing).status_code == 403
    client.force_login(django_user_model.objects.create_superuser("boss", password="x"))
    assert client.get(url).status_code == 200
    assert client.get(missing).status_code == 404
