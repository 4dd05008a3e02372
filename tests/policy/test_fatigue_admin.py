"""The marketer's side of fatigue control in the admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import FrequencyRule, Message
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db


def test_the_overview_charts_holds_per_rule_and_messages_per_customer(admin_client, outbox):
    FrequencyRule.objects.create(key="daily-1", name="One a day", limit=1, calendar="day")
    template = make_template(topic=make_topic())
    for _ in range(3):
        customer = make_customer()
        queue(customer, template)
        queue(customer, template)
    dispatcher.dispatch_due()

    response = admin_client.get(reverse("admin:delivery_frequencyrule_overview"))
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count('class="chart"') == 2
    assert "One a day (deferred)" in page
    assert response.context["holds"].totals == {"One a day": 3}
    assert response.context["weekly"].customers[0] == 3  # three customers got exactly one


def test_the_rule_list_links_to_the_overview(admin_client):
    page = admin_client.get(reverse("admin:delivery_frequencyrule_changelist")).content.decode()
    assert reverse("admin:delivery_frequencyrule_overview") in page


def test_a_rule_with_no_window_is_refused_on_the_field_not_with_a_500(admin_client):
    response = admin_client.post(
        reverse("admin:delivery_frequencyrule_add"),
        {
            "name": "Broken",
            "key": "broken",
            "active": "on",
            "kind": "cap",
            "limit": 3,
            "scope": "global",
            "applies_to": "marketing",
            "action": "defer",
            "calendar": "",
        },
    )
    assert response.status_code == 200
    assert "window" in response.context["adminform"].form.errors
    assert not FrequencyRule.objects.exists()


def test_cancel_stops_waiting_messages_and_leaves_sent_ones(admin_client, outbox):
    template = make_template(topic=make_topic(kind="transactional"))
    customer = make_customer()
    sent = queue(customer, template)
    dispatcher.dispatch_due()
    waiting = queue(customer, template)
    response = admin_client.post(
        reverse("admin:delivery_message_changelist"),
        {"action": "cancel_waiting", "_selected_action": [sent.id, waiting.id]},
        follow=True,
    )
    assert response.status_code == 200
    statuses = dict(Message.objects.values_list("id", "status"))
    assert statuses == {sent.id: "sent", waiting.id: "canceled"}
    waiting.refresh_from_db()
    assert waiting.explanation[-1]["step"] == "canceled"
    dispatcher.dispatch_due()
    assert len(outbox) == 1
