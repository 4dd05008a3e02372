"""Test send: every message of a journey's current draft, to one customer, right now.

A marketer checks what the journey will say before switching it on, so the draft
(not the published version) is what goes out, skipping the waits and branches. The
messages are ordinary outbox messages (source "admin", top priority), so they pass
through consent, rendering and the dispatcher exactly as the journey's own would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from journeys.definition import definition_of
from journeys.models import MESSAGE_KINDS, Journey
from journeys.triggers import registry
from orchestrator.audience.models import Customer, Event
from orchestrator.delivery.models import Message, MessageTemplate
from orchestrator.delivery.services import SendRefused, message_create

#: Test sends jump the queue: the marketer is waiting for them.
TEST_SEND_PRIORITY = 9


@dataclass(frozen=True)
class TestSendResult:
    messages: list[tuple[str, Message]] = field(default_factory=list)  # (step key, message)
    refusals: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)


def sample_context(journey: Journey, customer: Customer) -> dict[str, Any]:
    """What an enrollment of this customer would carry: the properties of their latest
    trigger event when the journey starts from one, so templates render with real data."""
    name = (journey.trigger or {}).get("event")
    kind = registry.get(journey.trigger_kind)
    if not name or kind is None or not kind.CONTEXT_FROM_EVENT:
        return {}
    event = Event.objects.filter(customer=customer, name=name).order_by("-occurred_at").first()
    if event is None or not isinstance(event.properties, dict):
        return {}
    return {k: v for k, v in event.properties.items() if not k.startswith("_")}


@transaction.atomic
def journey_test_send(*, journey: Journey, customer: Customer) -> TestSendResult:
    """Queue each send step's template of the draft for ``customer``.

    A step that cannot be sent (no template, no reachable channel, no variant) is
    reported in ``refusals`` and the others still go.
    """
    definition = definition_of(journey)
    context = sample_context(journey, customer)
    result = TestSendResult(context=context)
    sends = [s for s in definition["steps"] if s["kind"] in MESSAGE_KINDS]
    if not sends:
        result.refusals.append("This journey has no send steps, so there is nothing to test.")
        return result
    templates = {
        t.key: t
        for t in MessageTemplate.objects.filter(
            key__in=[s["config"].get("template") for s in sends]
        )
    }
    for step in sends:
        config = step["config"]
        name = step["label"] or step["key"]
        template = templates.get(config.get("template") or "")
        if template is None:
            result.refusals.append(
                f"Step {name!r}: there is no message template {config.get('template')!r}."
            )
            continue
        data = {**context, **(config.get("data") or {}), "journey": journey.key}
        try:
            # A savepoint per step: one refusal must not undo the messages already queued.
            with transaction.atomic():
                message = message_create(
                    customer=customer,
                    template=template,
                    topic=journey.topic,
                    channel=config.get("channel") or "preferred",
                    fallback_channel=config.get("fallback_channel") or "",
                    data=data,
                    priority=TEST_SEND_PRIORITY,
                    source=Message.Source.ADMIN,
                )
        except SendRefused as refused:
            result.refusals.append(f"Step {name!r}: {refused}")
            continue
        result.messages.append((step["key"], message))
    return result
