"""Turn stored webhook events into state: message statuses, suppressions, consent, replies.

Status events are applied in batches: a handful of queries per batch whatever its
size. Statuses only move forward (``RANK``): a "sent" arriving after "delivered"
is kept in the history but does not move the message back. An event for a message
a dispatcher is still recording (handed off moments ago, no outcome yet) waits for
the next run, so the dispatcher's own record is never lost. A message whose
outcome was unknown (the provider call timed out) is reconciled here: the
provider's report sets its status and provider id.

Inbound messages are handled one by one: STOP-family keywords opt the sender out
of marketing on that channel, START-family opt back in, HELP answers with help
text, and anything else becomes a ``message.replied`` event for journeys.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from channels.adapters.twilio_sms import SUPPRESS_REASONS as TWILIO_SUPPRESS_REASONS
from channels.webhooks.models import InboundMessage, WebhookEvent
from orchestrator.consent.channel_consent import channel_opt_in, channel_opt_out
from orchestrator.consent.keywords import HELP, START, STOP, classify
from orchestrator.consent.models import ConsentRecord
from orchestrator.consent.suppressions import suppressions_add
from orchestrator.delivery.models import Message, MessageEvent, MessageStatus

logger = logging.getLogger(__name__)

S = MessageStatus
#: How far along a message is. A report only ever moves a message to a higher rank.
RANK: dict[str, int] = {
    S.QUEUED: 0,
    S.SCHEDULED: 0,
    S.DEFERRED: 0,
    S.SENDING: 1,
    S.SENT: 2,
    S.DELIVERED: 3,
    S.UNDELIVERED: 3,
    S.BOUNCED: 3,
    S.FAILED: 3,
    S.OPENED: 4,
    S.CLICKED: 5,
    S.REPLIED: 6,
}
#: Our own final decisions: no provider report changes them.
SETTLED = {S.SUPPRESSED, S.CANCELED, S.EXPIRED}
#: How long a just-handed-off send is left to its dispatcher before a report is applied.
RECORDING_GRACE = dt.timedelta(seconds=60)

TWILIO_STATUS = {
    "sent": S.SENT,
    "delivered": S.DELIVERED,
    "undelivered": S.UNDELIVERED,
    "failed": S.FAILED,
    "read": S.OPENED,
}
SENDGRID_STATUS = {
    "processed": S.SENT,
    "delivered": S.DELIVERED,
    "bounce": S.BOUNCED,
    "dropped": S.FAILED,
    "open": S.OPENED,
    "click": S.CLICKED,
}
#: SendGrid's reasons for dropping a message that mean the address is unusable.
SENDGRID_DROP_SUPPRESS = {
    "Bounced Address": "bounce",
    "Invalid": "invalid",
    "Spam Reporting Address": "complaint",
}

#: What we answer to keywords, by the customer's language.
KEYWORD_REPLIES: dict[str, dict[str, str]] = {
    "en": {
        STOP: "{brand}: you will get no more marketing messages here. Reply START to undo.",
        START: "{brand}: you are subscribed again. Reply STOP to opt out, HELP for help.",
        HELP: "{brand}: reply STOP to opt out, START to opt back in. Manage your "
        "preferences from the link in any of our emails.",
    },
    "ja": {
        STOP: "【{brand}】今後このチャネルでのお知らせは配信されません。"
        "再開するには START と返信してください。",
        START: "【{brand}】配信を再開しました。停止するには STOP と返信してください。",
        HELP: "【{brand}】配信停止は STOP、再開は START と返信してください。",
    },
}


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
        statuses = [e for e in events if e.kind == WebhookEvent.Kind.STATUS]
        done, waiting, errors = _apply_statuses(statuses, now)
        for event in events:
            if event.kind == WebhookEvent.Kind.STATUS:
                continue
            try:
                with transaction.atomic():
                    _handle_contact_event(event, now)
                done.add(event.id)
            except Exception as exc:  # one bad event must not block the others
                logger.exception("webhook event %s failed", event.id)
                errors[event.id] = f"{type(exc).__name__}: {exc}"
        _mark(done, waiting, errors, now)
    stats.statuses = sum(1 for e in statuses if e.id in done)
    stats.inbound = sum(1 for e in events if e.kind != WebhookEvent.Kind.STATUS and e.id in done)
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


@dataclass
class _Report:
    event: WebhookEvent
    message_id: int | None
    status: str | None  # None: recorded in the history only
    provider: str
    provider_message_id: str
    occurred_at: dt.datetime
    code: str
    reason: str
    suppress: str = ""
    opt_out: bool = False


def _apply_statuses(
    events: list[WebhookEvent], now: dt.datetime
) -> tuple[set[int], set[int], dict[int, str]]:
    done: set[int] = set()
    waiting: set[int] = set()
    errors: dict[int, str] = {}
    reports = []
    for event in events:
        report = _twilio_report(event) if event.provider == "twilio" else _sendgrid_report(event)
        if report.message_id is None:
            errors[event.id] = "the event names no message of ours"
        else:
            reports.append(report)
    if not reports:
        return done, waiting, errors
    messages = Message.objects.select_for_update().in_bulk({r.message_id for r in reports})
    retried = set(
        MessageEvent.objects.filter(
            message_id__in=[r.message_id for r in reports if r.code == WINDOW_CLOSED],
            code=TEMPLATE_RETRY,
        ).values_list("message_id", flat=True)
    )
    history: list[MessageEvent] = []
    changed: dict[int, Message] = {}
    suppress: list[tuple[str, str, str, str]] = []
    for report in reports:
        message = messages.get(report.message_id)
        if message is None:
            errors[report.event.id] = f"message {report.message_id} does not exist"
            continue
        if (message.channel == "email") != (report.provider == "sendgrid"):
            errors[report.event.id] = f"message {message.id} was not sent by {report.provider}"
            continue
        if (
            message.provider_message_id
            and report.provider_message_id
            and message.provider_message_id != report.provider_message_id
        ):
            errors[report.event.id] = (
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
            waiting.add(report.event.id)
            continue
        done.add(report.event.id)
        status = report.status
        moved = (
            status is not None
            and message.status not in SETTLED
            and RANK.get(status, 0) > RANK.get(message.status, 0)
        )
        history.append(
            MessageEvent(
                message_id=message.id,
                status=status or message.status,
                occurred_at=report.occurred_at,
                reason=report.reason,
                code=report.code,
                provider_event_id=f"{report.provider}:{report.event.event_id}",
                raw=report.event.payload,
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
                message.provider = message.provider or report.provider
                message.provider_message_id = report.provider_message_id
                message.sent_at = message.sent_at or report.occurred_at
                message.handed_off_at = None
            message.status = status
            if status in (S.FAILED, S.UNDELIVERED, S.BOUNCED):
                message.last_error = report.reason
            changed[message.id] = message
        if report.suppress and message.to_address:
            suppress.append((message.channel, message.to_address, report.suppress, report.code))
        if report.opt_out:
            channel_opt_out(
                customer_id=message.customer_id,
                channel=message.channel,
                source=ConsentRecord.Source.PROVIDER,
                evidence={"provider": report.provider, "event": report.code},
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
    return done, waiting, errors


WINDOW_CLOSED = "twilio:63016"
TEMPLATE_RETRY = "whatsapp:template_retry"


def _resend_as_template(
    message: Message, report: _Report, retried: set[int], now: dt.datetime
) -> bool:
    """A WhatsApp session message Twilio failed afterwards because the customer-care
    window had closed: put it back in the outbox once. The dispatcher then sees the
    window as closed (the 63016 came after the customer's last message) and sends the
    variant's approved template, or fails it with the reason if there is none."""
    if message.channel != "whatsapp" or report.code != WINDOW_CLOSED or message.id in retried:
        return False
    message.status = S.QUEUED
    message.send_after = now
    message.provider_message_id = ""
    message.handed_off_at = None
    message.sent_at = None
    message.last_error = report.reason
    return True


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _twilio_report(event: WebhookEvent) -> _Report:
    params: dict[str, str] = event.payload.get("params", {})
    raw_status = params.get("MessageStatus") or params.get("SmsStatus", "")
    status = TWILIO_STATUS.get(raw_status)
    error_code = _int_or_none(params.get("ErrorCode"))
    reason = f"Twilio reports {raw_status}"
    code = f"twilio:{raw_status}"
    suppress = ""
    if error_code is not None and status in (S.FAILED, S.UNDELIVERED):
        reason += f" (error {error_code})"
        code = f"twilio:{error_code}"
        suppress = TWILIO_SUPPRESS_REASONS.get(error_code, "")
    return _Report(
        event=event,
        message_id=_int_or_none(event.payload.get("message_ref")),
        status=status,
        provider="twilio",
        provider_message_id=params.get("MessageSid") or params.get("SmsSid", ""),
        occurred_at=event.received_at,
        code=code,
        reason=reason,
        suppress=suppress,
    )


def _sendgrid_report(event: WebhookEvent) -> _Report:
    payload = event.payload
    kind = str(payload.get("event", ""))
    status = SENDGRID_STATUS.get(kind)
    reason = f"SendGrid reports {kind}"
    suppress = ""
    opt_out = False
    if kind == "bounce":
        bounce_type = payload.get("type", "bounce")
        reason = f"SendGrid reports a {bounce_type}: {payload.get('reason', '')}".strip(": ")
        if bounce_type == "bounce":
            suppress = "bounce"
        else:  # "blocked": the receiving server refused for now; the address is fine
            status = S.UNDELIVERED
    elif kind == "dropped":
        drop_reason = str(payload.get("reason", ""))
        reason = f"SendGrid dropped it: {drop_reason}"
        suppress = SENDGRID_DROP_SUPPRESS.get(drop_reason, "")
    elif kind == "spamreport":
        reason = "the recipient reported it as spam"
        suppress = "complaint"
    elif kind in ("unsubscribe", "group_unsubscribe"):
        reason = "the recipient unsubscribed at SendGrid"
        opt_out = True
    elif kind == "click" and payload.get("url"):
        reason = f"clicked {str(payload['url'])[:300]}"
    timestamp = _int_or_none(payload.get("timestamp"))
    occurred = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC) if timestamp else event.received_at
    return _Report(
        event=event,
        message_id=_int_or_none(payload.get("message_id")),
        status=status,
        provider="sendgrid",
        # sg_message_id is the X-Message-Id we stored plus a per-recipient suffix.
        provider_message_id=str(payload.get("sg_message_id") or "").split(".")[0],
        occurred_at=occurred,
        code=f"sendgrid:{kind}",
        reason=reason,
        suppress=suppress,
        opt_out=opt_out,
    )


# --- inbound messages and contacts ------------------------------------------------


@dataclass(frozen=True)
class Inbound:
    provider: str
    channel: str
    provider_message_id: str
    from_address: str
    to_address: str
    body: str
    received_at: dt.datetime


def _handle_contact_event(event: WebhookEvent, now: dt.datetime) -> None:
    if event.provider == "line" and event.kind == WebhookEvent.Kind.CONTACT:
        _line_follow(event)
        return
    inbound = _twilio_inbound(event) if event.provider == "twilio" else _line_inbound(event)
    handle_inbound(inbound)


def _twilio_inbound(event: WebhookEvent) -> Inbound:
    params = event.payload["params"]
    sender = params.get("From", "")
    channel = "whatsapp" if sender.startswith("whatsapp:") else "sms"
    return Inbound(
        provider="twilio",
        channel=channel,
        provider_message_id=params.get("MessageSid") or params.get("SmsMessageSid", ""),
        from_address=sender.removeprefix("whatsapp:"),
        to_address=params.get("To", "").removeprefix("whatsapp:"),
        body=params.get("Body", ""),
        received_at=event.received_at,
    )


def _line_inbound(event: WebhookEvent) -> Inbound:
    payload = event.payload
    timestamp = _int_or_none(payload.get("timestamp"))
    return Inbound(
        provider="line",
        channel="line",
        provider_message_id=str(payload["message"].get("id") or event.event_id),
        from_address=str(payload.get("source", {}).get("userId", "")),
        to_address="",
        body=str(payload["message"].get("text", "")),
        received_at=(
            dt.datetime.fromtimestamp(timestamp / 1000, tz=dt.UTC)
            if timestamp
            else event.received_at
        ),
    )


def _line_follow(event: WebhookEvent) -> None:
    """Unfollow (the person blocked the account): pushes would be silently dropped and
    still count against the quota, so the user id is suppressed. Follow lifts that."""
    from orchestrator.audience.models import Customer

    user_id = str(event.payload.get("source", {}).get("userId", ""))
    if not user_id:
        return
    customer = Customer.objects.filter(line_user_id=user_id).only("id").first()
    evidence = {"provider": "line", "event": event.payload.get("type"), "id": event.event_id}
    if event.payload.get("type") == "unfollow":
        suppressions_add([("line", user_id, "stop", "line:unfollow")])
        if customer is not None:
            channel_opt_out(
                customer_id=customer.id,
                channel="line",
                source=ConsentRecord.Source.INBOUND_KEYWORD,
                evidence=evidence,
            )
    else:
        channel_opt_in(
            customer_id=customer.id if customer else None,
            channel="line",
            address=user_id,
            source=ConsentRecord.Source.INBOUND_KEYWORD,
            evidence=evidence,
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
    if keyword == STOP:
        outcome = InboundMessage.Outcome.OPTED_OUT
        if customer is not None:
            changed = channel_opt_out(
                customer_id=customer.id,
                channel=inbound.channel,
                source=ConsentRecord.Source.INBOUND_KEYWORD,
                evidence=evidence,
            )
        else:  # nobody we know: keep the number from ever getting marketing from us
            changed = bool(
                suppressions_add([(inbound.channel, inbound.from_address, "stop", "inbound STOP")])
            )
    elif keyword == START:
        outcome = InboundMessage.Outcome.OPTED_IN
        changed = channel_opt_in(
            customer_id=customer.id if customer else None,
            channel=inbound.channel,
            address=inbound.from_address,
            source=ConsentRecord.Source.INBOUND_KEYWORD,
            evidence=evidence,
        )
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
        _confirm(customer, inbound.channel, keyword)
    return row


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
        if reply_to.status not in SETTLED and RANK[S.REPLIED] > RANK.get(reply_to.status, 0):
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


def _confirm(customer, channel: str, keyword: str) -> None:
    """One confirmation, through the outbox like any other send (recorded, retried)."""
    from orchestrator.delivery.services import message_create
    from orchestrator.delivery.system import keyword_reply_template

    language = (customer.locale or "en").split("-")[0]
    texts = KEYWORD_REPLIES.get(language, KEYWORD_REPLIES["en"])
    text = texts[keyword].format(brand=settings.BRAND_NAME)
    message_create(
        customer=customer,
        template=keyword_reply_template(),
        channel=channel,
        data={"text": text},
        priority=9,
        source=Message.Source.SYSTEM,
    )
