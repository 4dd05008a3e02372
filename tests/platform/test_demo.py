"""The Stride Running demo: realistic, renderable, and idempotent."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from orchestrator.audience.models import Customer, Event
from orchestrator.consent.models import (
    ChannelOptOut,
    ChannelPreference,
    ConsentRecord,
    Subscription,
    Topic,
)
from orchestrator.delivery.models import (
    FrequencyRule,
    InboundMessage,
    Message,
    MessageEvent,
    TemplateVariant,
)
from orchestrator.delivery.rendering import build_context, render_variant

pytestmark = pytest.mark.django_db

MODELS = (
    Customer,
    Event,
    Topic,
    Subscription,
    ConsentRecord,
    ChannelPreference,
    TemplateVariant,
    FrequencyRule,
    Message,
    MessageEvent,
    InboundMessage,
    ChannelOptOut,
)


def snapshot():
    return {
        model.__name__: sorted(model.objects.values_list("pk", flat=True)) for model in MODELS
    } | {"customer_updated": sorted(Customer.objects.values_list("updated_at", flat=True))}


def test_loading_the_demo_twice_changes_nothing_the_second_time(demo, capsys):
    assert demo.customers == 50
    before = snapshot()
    call_command("load_demo")
    assert "nothing changed" in capsys.readouterr().out
    assert snapshot() == before


def test_demo_customers_span_time_zones_locales_and_channels(demo):
    customers = list(Customer.objects.all())
    zones = {c.timezone for c in customers}
    assert {"Asia/Tokyo", "America/Chicago", "America/New_York", "Europe/London"} <= zones
    assert {"Australia/Sydney", "Asia/Kolkata"} <= zones
    assert {c.locale for c in customers} == {"en", "ja"}
    assert all(c.email.endswith("@example.com") for c in customers)
    assert sum(bool(c.phone) for c in customers) >= 20
    assert sum(bool(c.line_user_id) for c in customers) >= 10
    assert sum(bool(c.whatsapp) for c in customers) >= 5
    for c in customers:
        assert {"first_name", "favourite_shoe", "shoe_size", "predicted_replenishment_date"} <= set(
            c.attributes
        )
    japanese_line_first = ChannelPreference.objects.filter(
        customer__locale="ja", channel_order__0="line"
    ).count()
    assert japanese_line_first >= 10


def test_marketing_consent_is_explicit_and_in_the_ledger(demo):
    replenishment = Topic.objects.get(key="replenishment")
    assert replenishment.kind == Topic.Kind.MARKETING
    assert replenishment.default_opt_in is False
    assert Topic.objects.get(key="order-updates").kind == Topic.Kind.TRANSACTIONAL
    opted_in = (
        Subscription.objects.filter(topic=replenishment, status="subscribed")
        .values("customer")
        .distinct()
        .count()
    )
    assert opted_in > 25  # most customers
    # Every subscription has its ledger entry, with evidence.
    for sub in Subscription.objects.all():
        record = ConsentRecord.objects.get(
            customer=sub.customer, topic=sub.topic, channel=sub.channel
        )
        assert record.action == "opt_in"
        assert record.evidence["capture"]


def test_every_demo_template_variant_renders_for_a_customer_of_its_locale(demo):
    # The platform's own keyword-reply template (made by the demo's STOP) is not a demo one.
    demo_variants = TemplateVariant.objects.exclude(template__key="keyword-reply")
    for variant in demo_variants.select_related("template"):
        customer = Customer.objects.filter(locale=variant.locale).order_by("pk").first()
        context = build_context(
            customer=customer,
            message_data={
                "order_id": "SR-1",
                "product": "Stride Daily 5",
                "total": "$110.00",
            },
        )
        rendered = render_variant(
            subject=variant.subject,
            body=variant.body,
            html=variant.html,
            channel=variant.channel,
            context=context,
        )
        personal = (
            customer.attributes["first_name"],
            customer.attributes["favourite_shoe"],
            "SR-1",
        )
        assert any(value in rendered.body for value in personal), variant
        assert "{{" not in rendered.body + rendered.subject + rendered.html


def test_demo_orders_are_events_and_messages_are_queued_on_mixed_channels(demo):
    orders = Event.objects.filter(name="order.completed")
    assert orders.count() == demo.events >= 50
    assert all({"product", "price", "currency"} <= set(e.properties) for e in orders)
    messages = Message.objects.filter(source="demo")
    assert messages.count() == 6
    assert {"email", "sms", "line", "whatsapp"} <= set(messages.values_list("channel", flat=True))
    alex = messages.get(customer__external_id="alex", template__key="order-confirmation")
    assert alex.channel == "email"
    assert alex.data["product"]
    assert alex.history.count() == 1


def test_the_demo_shows_a_reply_for_journeys_and_a_japanese_stop_on_line(demo):
    reply = Event.objects.get(customer__external_id="alex", name="message.replied")
    assert reply.properties["body"].startswith("The arch didn't fit")
    opt_out = ChannelOptOut.objects.get()
    assert (opt_out.channel, opt_out.customer.locale) == ("line", "ja")
    assert ConsentRecord.objects.filter(
        customer=opt_out.customer, source="inbound_keyword", evidence__text="配信停止"
    ).exists()
    assert InboundMessage.objects.count() == 2


def test_the_demo_journeys_are_definition_files_loaded_active_once(demo):
    from journeys.definition import validate
    from journeys.models import Journey
    from orchestrator.demo.services import JOURNEYS_DIR, demo_journeys

    definitions = demo_journeys()
    keys = {d["key"] for d in definitions}
    # One file per journey, named by its key.
    assert {p.stem for p in JOURNEYS_DIR.glob("*.json")} == keys
    assert keys == {"shoe-replenishment", "fitting-reminders", "first-snow"}
    for definition in definitions:
        assert validate(definition) == [], definition["key"]
    assert demo.journeys == len(keys)
    journeys = Journey.objects.filter(key__in=keys)
    assert sorted(j.status for j in journeys) == [Journey.Status.ACTIVE] * len(keys)
    call_command("load_demo")
    assert Journey.objects.filter(key__in=keys).count() == len(keys)


def test_load_demo_if_empty_leaves_a_database_with_customers_alone(capsys):
    from orchestrator.audience.services import customer_upsert

    customer_upsert(external_id="someone")
    call_command("load_demo", "--if-empty")
    assert Customer.objects.count() == 1
    assert capsys.readouterr().out == ""
    Customer.objects.all().delete()
    call_command("load_demo", "--if-empty")
    assert Customer.objects.count() == 50
    assert "Demo data loaded" in capsys.readouterr().out


def _demo_first_run() -> None:
    """What the worker and beat do in the first minute of `make run`: the recorded events,
    the trigger sweeps, the engine and the dispatcher, twice (beat repeats the sweeps)."""
    from journeys import engine, events
    from journeys.triggers import tasks as sweeps
    from orchestrator.delivery.dispatcher import dispatch_due

    for _ in range(2):
        while events.process_pending().events:
            pass
        sweeps.replenishment_sweep()
        sweeps.journey_triggers()
        engine.tick()
        dispatch_due()


def test_in_the_demos_first_run_nobody_gets_the_same_message_twice(demo, outbox):
    from collections import Counter

    _demo_first_run()

    # Every message that went or will go (not those stopped by consent, caps or an exit).
    stopped = ("suppressed", "canceled", "expired")
    going = Message.objects.exclude(status__in=stopped)
    pairs = Counter(going.values_list("customer__external_id", "template__key"))
    assert [pair for pair, n in pairs.items() if n > 1] == []
    # The replenishment journey reminds Alex and Kenta (and whoever else is due), once each.
    reminders = Counter(
        going.filter(template__key="replenishment-reminder").values_list(
            "customer__external_id", "source"
        )
    )
    assert reminders[("alex", "journey")] == reminders[("kenta-sato", "journey")] == 1
    assert {source for _customer, source in reminders} == {"journey"}
    # And the providers (here the in-memory adapter) took no message twice for anyone.
    handed = Counter(
        Message.objects.filter(id__in=[m.message_id for m in outbox]).values_list(
            "customer__external_id", "template__key"
        )
    )
    assert outbox and len(outbox) == handed.total()
    assert [pair for pair, n in handed.items() if n > 1] == []
