"""Turn stored webhook events into state: message statuses, suppressions, consent, replies.

Each stored event is parsed by its provider's module (``channels.webhooks.providers``)
into the one vocabulary of ``channels.webhooks.events``; everything here reads only
that, so a new provider needs no change here.

Status changes are applied in batches: a handful of queries per batch whatever its
size, forward only (``orchestrator.delivery.status``). An event for a message a
dispatcher is still recording (handed off moments ago, no outcome yet) waits for
the next run, so the dispatcher's own record is never lost. A message whose outcome
was unknown (the provider call timed out) is reconciled here: the provider's report
sets its status and provider id.

Inbound messages are handled one by one: a STOP-family keyword from a phone number
stops every send from the sender it was texted to (our number) to that number,
transactional included, whichever customer records hold it, but its one
confirmation; START-family undoes exactly that; HELP answers with help text; and
anything else becomes a ``message.replied`` event for journeys. On LINE, which has
no numbers, STOP opts every record holding the user id out of marketing.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from channels.webhooks.events import ContactChange, Event, Inbound, StatusChange, StoredEvent
from channels.webhooks.models import WebhookEvent
from channels.webhooks.providers import PROVIDERS
from orchestrator.consent.channel_consent import (
    address_holders,
    channel_opt_in,
    channel_opt_out,
    number_opt_in,
    number_opt_out,
    stop_confirmation_allow,
)
from orchestrator.consent.keywords import HELP, START, STOP, classify, keyword_reply
from orchestrator.consent.models import ConsentRecord, Suppression
from orchestrator.consent.senders import SENDER_KEYED, sender_address
from orchestrator.consent.suppressions import suppressions_add
from orchestrator.delivery.models import InboundMessage, Message, MessageEvent, MessageStatus
from orchestrator.delivery.status import FAILED_OUTCOMES, may_move

__all__ = ["Inbound", "ProcessStats", "handle_inbound", "process_pending"]

logger = logging.getLogger(__name__)

S = MessageStatus
#: How long a just-handed-off send is left to its dispatcher before a report is applied.
RECORDING_GRACE = dt.timedelta(seconds=60)
#: The history code of a WhatsApp message put back in the outbox after the window closed.
TEMPLATE_RETRY = "whatsapp:template_retry"


@dataclass
class ProcessStats:
    statuses: int = 0
    inbound: int = 0
    waiting: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "statuses": self.statuses,
            "inbound": self.inbound,
            "waiting": self.waiting,
            "errors": self.errors,
        }


def parse_event(event: WebhookEvent) -> Event:
    """A stored event in the one vocabulary, parsed by its provider's module."""
    stored = StoredEvent(event.kind, event.event_id, event.payload, event.received_at)
    return PROVIDERS[event.provider].parse(stored)


def process_pending(*, limit: int = 500) -> ProcessStats:
    """Process up to ``limit`` stored events, oldest first. Safe to run concurrently."""
    stats = ProcessStats()
    with transaction.atomic():
        events = list(
            WebhookEvent.objects.select_for_update(skip_locked=True)
            .filter(processed_at=None)
            .order_by("id")[:limit]
        )
        if not events:
            return stats
        now = timezone.now()
        errors: dict[int, str] = {}
        statuses: list[tuple[WebhookEvent, StatusChange]] = []
        others: list[tuple[WebhookEvent, Event]] = []
        for event in events:
            try:
                parsed = parse_event(event)
            except Exception as exc:  # a payload its provider cannot read: kept with the error
                logger.exception("webhook event %s could not be parsed", event.id)
                errors[event.id] = f"{type(exc).__name__}: {exc}"
                continue
            if isinstance(parsed, StatusChange):
                statuses.append((event, parsed))
            else:
                others.append((event, parsed))
        done, waiting = _apply_statuses(statuses, now, errors)
        for event, parsed in others:
            try:
                with transaction.atomic():
                    if isinstance(parsed, ContactChange):
                        contact_change(parsed)
                    else:
                        handle_inbound(parsed)
                done.add(event.id)
            except Exception as exc:  # one bad event must not block the others
                logger.exception("webhook event %s failed", event.id)
                errors[event.id] = f"{type(exc).__name__}: {exc}"
        _mark(done, waiting, errors, now)
    stats.statuses = sum(1 for event, _ in statuses if event.id in done)
    stats.inbound = sum(1 for event, _ in others if event.id in done)
    stats.waiting = len(waiting)
    stats.errors = len(errors)
    return stats


def _mark(done: set[int], waiting: set[int], errors: dict[int, str], now: dt.datetime) -> None:
    if done:
        WebhookEvent.objects.filter(id__in=done).update(processed_at=now, error="")
    for event_id, error in errors.items():
        # Kept out of the queue with its error for an operator; not retried forever.
        WebhookEvent.objects.filter(id=event_id).update(processed_at=now, error=error[:2000])
    if waiting:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE webhooks_webhookevent SET attempts = attempts + 1 WHERE id = ANY(%s)",
                [sorted(waiting)],
            )


# --- delivery statuses --------------------------------------------------------------


def _apply_statuses(
    reports: list[tuple[WebhookEvent, StatusChange]], now: dt.datetime, errors: dict[int, str]
) -> tuple[set[int], set[int]]:
    done: set[int] = set()
    waiting: set[int] = set()
    named: list[tuple[WebhookEvent, StatusChange]] = []
    for event, report in reports:
        if report.message_id is None:
            errors[event.id] = "the event names no message of ours"
        else:
            named.append((event, report))
    if not named:
        return done, waiting
    # A message another transaction holds (a dispatcher recording it, an erasure) is
    # skipped, never waited for: its event waits for the next run. Waiting here while
    # holding the claimed events could close a circle with an erasure, which locks the
    # person's messages and then scrubs their events.
    named_ids = {r.message_id for _, r in named}
    messages = {
        m.id: m
        for m in Message.objects.select_for_update(skip_locked=True)
        .filter(id__in=named_ids)
        .order_by("id")
    }
    busy = set(
        Message.objects.filter(id__in=named_ids - set(messages)).values_list("id", flat=True)
    )
    retried = set(
        MessageEvent.objects.filter(
            message_id__in=[r.message_id for _, r in named if r.window_closed],
            code=TEMPLATE_RETRY,
        ).values_list("message_id", flat=True)
    )
    history: list[MessageEvent] = []
    changed: dict[int, Message] = {}
    suppress: list[tuple[str, str, str, str]] = []
    for event, report in named:
        provider = event.provider
        message = messages.get(report.message_id)
        if message is None:
            if report.message_id in busy:
                waiting.add(event.id)
            else:
                errors[event.id] = f"message {report.message_id} does not exist"
            continue
        if message.channel not in PROVIDERS[provider].CHANNELS:
            errors[event.id] = f"message {message.id} was not sent by {provider}"
            continue
        if (
            message.provider_message_id
            and report.provider_message_id
            and message.provider_message_id != report.provider_message_id
        ):
            errors[event.id] = (
                f"message {message.id} was sent as {message.provider_message_id}, "
                f"not {report.provider_message_id}"
            )
            continue
        recording = (
            message.status == S.SENDING
            and not message.provider_message_id
            and message.handed_off_at is not None
            and now - message.handed_off_at < RECORDING_GRACE
        )
        if recording:
            waiting.add(event.id)
            continue
        done.add(event.id)
        status = report.status
        moved = may_move(message.status, status)
        history.append(
            MessageEvent(
                message_id=message.id,
                status=status or message.status,
                occurred_at=report.occurred_at,
                reason=report.reason,
                code=report.code,
                provider_event_id=f"{provider}:{event.event_id}",
                raw=event.payload,
            )
        )
        if moved and _resend_as_template(message, report, retried, now):
            history.append(
                MessageEvent(
                    message_id=message.id,
                    status=S.QUEUED,
                    occurred_at=now,
                    reason="the WhatsApp window had closed (63016): sending again, as the "
                    "approved template if the template has one",
                    code=TEMPLATE_RETRY,
                )
            )
            retried.add(message.id)
            changed[message.id] = message
        elif moved:
            if message.status == S.SENDING:  # an unknown outcome, reconciled
                message.provider = message.provider or provider
                message.provider_message_id = report.provider_message_id
                message.sent_at = message.sent_at or report.occurred_at
                message.handed_off_at = None
            message.status = status
            if status in FAILED_OUTCOMES:
                message.last_error = report.reason
            changed[message.id] = message
        if report.suppress and message.to_address:
            suppress.append((message.channel, message.to_address, report.suppress, report.code))
        if report.opt_out:
            channel_opt_out(
                customer_id=message.customer_id,
                channel=message.channel,
                source=ConsentRecord.Source.PROVIDER,
                evidence={"provider": provider, "event": report.code},
            )
    MessageEvent.objects.bulk_create(history, ignore_conflicts=True)
    if changed:
        for message in changed.values():
            message.updated_at = now
        Message.objects.bulk_update(
            list(changed.values()),
            [
                "status",
                "provider",
                "provider_message_id",
                "sent_at",
                "handed_off_at",
                "last_error",
                "send_after",
                "updated_at",
            ],
        )
    suppressions_add(suppress)
    return done, waiting


def _resend_as_template(
    message: Message, report: StatusChange, retried: set[int], now: dt.datetime
) -> bool:
    """A WhatsApp session message the provider failed afterwards because the customer-care
    window had closed: put it back in the outbox once. The dispatcher then sees the
    window as closed (the failure came after the customer's last message) and sends the
    variant's approved template, or fails it with the reason if there is none."""
    if message.channel != "whatsapp" or not report.window_closed or message.id in retried:
        return False
    message.status = S.QUEUED
    message.send_after = now
    message.provider_message_id = ""
    message.handed_off_at = None
    message.sent_at = None
    message.last_error = report.reason
    return True


# --- inbound messages and contacts ------------------------------------------------


def contact_change(change: ContactChange) -> None:
    """Unfollow (the person blocked the account): pushes would be silently dropped and
    still count against the quota, so the address is suppressed. Follow lifts that."""
    if not change.address:
        return
    customer = _find_customer(change.channel, change.address)
    if not change.following:
        suppressions_add(
            [(change.channel, change.address, "stop", f"{change.channel}:{change.event}")]
        )
        if customer is not None:
            channel_opt_out(
                customer_id=customer.id,
                channel=change.channel,
                source=ConsentRecord.Source.INBOUND_KEYWORD,
                evidence=change.evidence,
            )
    else:
        channel_opt_in(
            customer_id=customer.id if customer else None,
            channel=change.channel,
            address=change.address,
            source=ConsentRecord.Source.INBOUND_KEYWORD,
            evidence=change.evidence,
        )


def _find_customer(channel: str, address: str):
    from orchestrator.audience.models import Customer

    if not address:
        return None
    field_name = {"sms": "phone", "whatsapp": "whatsapp", "line": "line_user_id"}[channel]
    customer = Customer.objects.filter(**{field_name: address}).order_by("id").first()
    if customer is None and channel == "whatsapp":
        customer = Customer.objects.filter(phone=address).order_by("id").first()
    return customer


def handle_inbound(inbound: Inbound) -> InboundMessage | None:
    """Apply one inbound message; a repeat of one already handled does nothing."""
    if InboundMessage.objects.filter(
        provider=inbound.provider, provider_message_id=inbound.provider_message_id
    ).exists():
        return None
    customer = _find_customer(inbound.channel, inbound.from_address)
    keyword = classify(inbound.body)
    evidence = {
        "provider": inbound.provider,
        "inbound_message_id": inbound.provider_message_id,
        "text": inbound.body[:160],
    }
    reply_to = _last_sent(customer.id, inbound.channel) if customer else None
    changed = False
    stop: Suppression | None = None
    if keyword == STOP:
        outcome = InboundMessage.Outcome.OPTED_OUT
        if inbound.channel in SENDER_KEYED:
            stop = number_opt_out(
                channel=inbound.channel,
                address=inbound.from_address,
                sender=sender_address(inbound.to_address),
                source=ConsentRecord.Source.INBOUND_KEYWORD,
                evidence=evidence,
                detail=f"inbound STOP {inbound.provider_message_id}",
            )
            changed = stop is not None
        else:
            changed = _line_opt_out(inbound, evidence)
    elif keyword == START:
        outcome = InboundMessage.Outcome.OPTED_IN
        if inbound.channel in SENDER_KEYED:
            changed = number_opt_in(
                channel=inbound.channel,
                address=inbound.from_address,
                sender=sender_address(inbound.to_address),
                source=ConsentRecord.Source.INBOUND_KEYWORD,
                evidence=evidence,
            )
        else:
            changed = _line_opt_in(inbound, evidence)
    elif keyword == HELP:
        outcome = InboundMessage.Outcome.HELP
        changed = True
    elif customer is None:
        outcome = InboundMessage.Outcome.UNKNOWN_SENDER
    else:
        outcome = InboundMessage.Outcome.REPLY
    row = InboundMessage.objects.create(
        provider=inbound.provider,
        channel=inbound.channel,
        provider_message_id=inbound.provider_message_id,
        customer=customer,
        from_address=inbound.from_address,
        to_address=inbound.to_address,
        body=inbound.body,
        keyword=keyword,
        outcome=outcome,
        in_reply_to=reply_to,
        received_at=inbound.received_at,
    )
    if outcome == InboundMessage.Outcome.REPLY:
        _record_reply(row, customer, reply_to)
    elif keyword and changed and customer is not None and settings.KEYWORD_CONFIRMATIONS:
        confirmation = _confirm(customer, inbound.channel, keyword)
        if stop is not None:
            stop_confirmation_allow(suppression_id=stop.id, message_id=confirmation.id)
    return row


def _line_opt_out(inbound: Inbound, evidence: dict[str, Any]) -> bool:
    """STOP on a channel without numbers: every record holding the id opts out of marketing."""
    holders = address_holders(inbound.channel, [inbound.from_address]).get(inbound.from_address, [])
    if not holders:  # nobody we know: keep the id from ever getting marketing from us
        entry = (inbound.channel, inbound.from_address, "stop", "inbound STOP")
        return bool(suppressions_add([entry]))
    changes = [
        channel_opt_out(
            customer_id=customer_id,
            channel=inbound.channel,
            source=ConsentRecord.Source.INBOUND_KEYWORD,
            evidence=evidence,
        )
        for customer_id in holders
    ]
    return any(changes)


def _line_opt_in(inbound: Inbound, evidence: dict[str, Any]) -> bool:
    holders = address_holders(inbound.channel, [inbound.from_address]).get(inbound.from_address, [])
    changes = [
        channel_opt_in(
            customer_id=customer_id,
            channel=inbound.channel,
            address=inbound.from_address,
            source=ConsentRecord.Source.INBOUND_KEYWORD,
            evidence=evidence,
        )
        for customer_id in holders or [None]
    ]
    return any(changes)


def _last_sent(customer_id: int, channel: str) -> Message | None:
    since = timezone.now() - dt.timedelta(days=7)
    return (
        Message.objects.filter(
            customer_id=customer_id,
            channel=channel,
            sent_at__gte=since,
            status__in=[S.SENT, S.DELIVERED, S.OPENED, S.CLICKED, S.REPLIED],
        )
        .order_by("-sent_at", "-id")
        .first()
    )


def _record_reply(row: InboundMessage, customer, reply_to: Message | None) -> None:
    from orchestrator.audience.services import event_record

    properties: dict[str, Any] = {"body": row.body, "channel": row.channel}
    if reply_to is not None:
        properties["message_id"] = reply_to.id
        if reply_to.journey:
            properties["journey"] = reply_to.journey
        MessageEvent.objects.create(
            message=reply_to,
            status=S.REPLIED,
            occurred_at=row.received_at,
            reason="the customer replied",
            code=f"{row.provider}:reply",
        )
        if may_move(reply_to.status, S.REPLIED):
            Message.objects.filter(id=reply_to.id).update(
                status=S.REPLIED, updated_at=timezone.now()
            )
    event_record(
        customer=customer.external_id,
        name="message.replied",
        properties=properties,
        occurred_at=row.received_at,
        event_id=f"{row.provider}:{row.provider_message_id}"[:255],
        source=row.provider,
    )


def _confirm(customer, channel: str, keyword: str) -> Message:
    """One confirmation, through the outbox like any other send (recorded, retried)."""
    from orchestrator.delivery.services import message_create
    from orchestrator.delivery.system import keyword_reply_template

    text = keyword_reply(keyword, locale=customer.locale, brand=settings.BRAND_NAME)
    return message_create(
        customer=customer,
        template=keyword_reply_template(),
        channel=channel,
        data={"text": text},
        priority=9,
        source=Message.Source.SYSTEM,
    )
