"""A person's rights over their data: export (GDPR Art. 15/20) and erasure (Art. 17).

Customers, events, consent and messages are read here; the apps above delivery that
hold personal data too have their part in their own ``privacy`` module, called
directly: journeys (enrollments), the webhooks (inbound messages, raw payloads) and
the dev inbox (copies of what was sent).

The entry points (API, admin, the preference center) call ``customer_export`` and
``customer_erase`` and nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from channels.devinbox.privacy import devinbox_erase
from channels.webhooks.privacy import webhooks_erase, webhooks_export, webhooks_lock
from journeys.privacy import journeys_erase, journeys_export
from orchestrator.audience.models import Customer
from orchestrator.audience.selectors import customer_addresses
from orchestrator.broadcasts.privacy import broadcasts_erase, broadcasts_export
from orchestrator.consent.models import Suppression, address_hash
from orchestrator.consent.suppressions import suppressions_add
from orchestrator.core.jsonable import iso
from orchestrator.delivery.dispatcher.send import wait_for_sends
from orchestrator.delivery.models import WAITING_STATUSES, Message, MessageStatus
from orchestrator.delivery.services import messages_cancel

logger = logging.getLogger(__name__)

#: Bumped when a section changes shape, so a client reading old exports can tell.
EXPORT_FORMAT = 1


# --- export ----------------------------------------------------------------------------


def _message(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "created_at": iso(message.created_at),
        "topic": message.topic.key,
        "template": message.template.key,
        "channel": message.channel,
        "requested_channel": message.requested_channel,
        "to_address": message.to_address,
        "locale": message.locale,
        "status": message.status,
        "source": message.source,
        "journey": message.journey,
        "send_after": iso(message.send_after),
        "expires_at": iso(message.expires_at),
        "sent_at": iso(message.sent_at),
        "provider": message.provider,
        "provider_message_id": message.provider_message_id,
        "data": message.data,
        "rendered": message.rendered,
        "explanation": message.explanation,
        "last_error": message.last_error,
        "history": [
            {
                "status": event.status,
                "occurred_at": iso(event.occurred_at),
                "reason": event.reason,
                "code": event.code,
                "provider_payload": event.raw,
            }
            for event in message.history.all()
        ],
    }


def customer_export(*, customer: Customer) -> dict[str, Any]:
    """Everything held about the customer, as JSON-ready data (Art. 15 access, Art. 20
    portability): the row, events, consent (current state and the full ledger),
    preferences, suppressions of their addresses, every message with its rendered
    content, decision trail and status history, their journeys, and what providers
    told us about them (inbound messages, raw webhook payloads), and the broadcasts
    they are due to get whose copies are not written yet."""
    preference = getattr(customer, "preference", None)
    hashes = {(c, address_hash(c, a)) for c, a in customer_addresses(customer)}
    suppressions = Suppression.objects.filter(address_hash__in={h for _c, h in hashes})
    messages = (
        Message.objects.filter(customer=customer)
        .select_related("topic", "template")
        .prefetch_related("history")
        .order_by("created_at", "id")
    )
    export: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "exported_at": iso(timezone.now()),
        "customer": {
            "external_id": customer.external_id,
            "email": customer.email,
            "phone": customer.phone,
            "whatsapp": customer.whatsapp,
            "line_user_id": customer.line_user_id,
            "locale": customer.locale,
            "timezone": customer.timezone,
            "attributes": customer.attributes,
            "created_at": iso(customer.created_at),
            "updated_at": iso(customer.updated_at),
        },
        "events": [
            {
                "name": e.name,
                "properties": e.properties,
                "occurred_at": iso(e.occurred_at),
                "received_at": iso(e.received_at),
                "event_id": e.event_id,
                "source": e.source,
            }
            for e in customer.events.order_by("occurred_at", "id")
        ],
        "subscriptions": [
            {
                "topic": s.topic.key,
                "channel": s.channel,
                "status": s.status,
                "updated_at": iso(s.updated_at),
            }
            for s in customer.subscriptions.select_related("topic").order_by("topic", "channel")
        ],
        "consent_records": [
            {
                "topic": r.topic.key if r.topic else None,
                "channel": r.channel or None,
                "action": r.action,
                "source": r.source,
                "evidence": r.evidence,
                "created_at": iso(r.created_at),
            }
            for r in customer.consent_records.select_related("topic").order_by("created_at", "id")
        ],
        "channel_preference": None
        if preference is None
        else {
            "channel_order": list(preference.channel_order),
            "quiet_hours_start": iso(preference.quiet_hours_start),
            "quiet_hours_end": iso(preference.quiet_hours_end),
            "paused_until": iso(preference.paused_until),
            "max_per_week": preference.max_per_week,
            "updated_at": iso(preference.updated_at),
        },
        "channel_opt_outs": [
            {"channel": o.channel, "source": o.source, "created_at": iso(o.created_at)}
            for o in customer.channel_opt_outs.order_by("channel")
        ],
        "suppressions": [
            {"channel": s.channel, "reason": s.reason, "created_at": iso(s.created_at)}
            for s in suppressions
            if (s.channel, s.address_hash) in hashes
        ],
        "messages": [_message(m) for m in messages],
    }
    export["webhooks"] = webhooks_export(customer)
    export["journeys"] = journeys_export(customer)
    export["pending_broadcasts"] = broadcasts_export(customer)
    return export


# --- erasure ---------------------------------------------------------------------------


def _forget_in_admin_log(customer: Customer) -> None:
    """Keep the admin's audit trail (who changed customer #id, when) but not what names
    the person: the entry's label is the external id, its message the fields changed."""
    if not apps.is_installed("django.contrib.admin"):
        return
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Customer), object_id=str(customer.pk)
    ).update(object_repr=f"erased customer #{customer.pk}", change_message="")


@dataclass(frozen=True)
class ErasureSummary:
    """What an erasure did; it names no personal data, so it may be logged and returned."""

    suppressed_channels: list[str]
    canceled_messages: int
    deleted: dict[str, int] = field(default_factory=dict)


def customer_erase(*, customer: Customer, source: str) -> ErasureSummary:
    """Erase the customer (Art. 17), in one transaction; raise Customer.DoesNotExist if
    they are gone already. Once this returns, no provider call for them follows.

    0. Take their send lock exclusively: provider calls in flight for them finish and
       are recorded first; a dispatcher's next chunk for them waits, then finds its
       rows gone. Then lock the webhook events naming them and their messages (the order
       webhook processing takes them in), so no history row appears for one of them
       between our deletes (a race is retried, ``ERASE_ATTEMPTS`` times in all).
    1. Lock the customer row. A journey step or an API send for them that is writing
       right now finishes first; one that starts later waits on the lock and then fails
       its foreign key, instead of re-creating data we are deleting.
    2. Suppress every address they had (current ones and those messages went to) with
       reason ``erased``: only ``sha256(channel:address)`` is kept, so a person created
       again later with the same address is refused at dispatch. An existing suppression
       (a bounce, say) is kept as it is: the address is blocked either way.
    3. Cancel their messages still waiting, or claimed by a dispatcher and not yet
       handed off, so none is sent between now and commit.
    4. The other apps' parts: the dev inbox deletes its copies of what was sent to
       them; the webhooks delete inbound messages and scrub raw webhook payloads
       holding the addresses; journeys exit active enrollments.
    5. Delete the customer row and everything that cascades from it: events,
       subscriptions, the consent ledger, preferences, opt-outs, messages with their
       rendered content and history, enrollments and their step log, inbound messages.

    Kept on purpose, because integrity needs it and none of it identifies the person:

    - the ``Suppression`` hashes (the point of step 2; their ``detail`` names only the
      source of the request, never the person). A hash is pseudonymous, not anonymous
      (a phone number's can be found by trying numbers), so it is kept only as the
      means of honouring the erasure;
    - topics, templates, journeys and frequency rules (configuration, not personal);
    - the admin log's entries for the customer, relabelled ``erased customer #id``;
    - webhook event rows, scrubbed to ``{"erased": true}`` but not deleted: their
      unique (provider, event id) is what stops a provider's retry or a replay from
      being processed again and re-creating an inbound message with the address.

    Not touched here, and why: API idempotency records may hold a response naming the
    customer; they are purged after IDEMPOTENCY_KEY_TTL_HOURS. A message the provider
    already had (its call finished before step 0 ended) cannot be recalled; its row is
    deleted all the same, and a late provider report for it then finds nothing.
    """
    for attempt in range(1, ERASE_ATTEMPTS + 1):
        try:
            # A savepoint when the caller holds a transaction (an idempotent API request):
            # a failed attempt is rolled back alone and tried again.
            with transaction.atomic():
                return _erase(customer, source)
        except (IntegrityError, OperationalError) as exc:
            if attempt == ERASE_ATTEMPTS or not _retryable(exc):
                raise
            logger.warning(
                "erasure of customer %s raced a concurrent write (%s); trying again",
                customer.pk,
                _sqlstate(exc),
            )
    raise AssertionError("unreachable")  # the loop returns or raises


#: Attempts at an erasure that races concurrent writes (a deadlock, a history row
#: written for a message being deleted) before the error is raised.
ERASE_ATTEMPTS = 3
#: Deadlock, serialization failure, foreign key violation.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "23503"})
_ERASED = "the customer's data was erased"


def _sqlstate(exc: Exception) -> str:
    cause = exc.__cause__
    return str(getattr(cause, "sqlstate", "") or getattr(cause, "pgcode", "") or "")


def _retryable(exc: Exception) -> bool:
    return _sqlstate(exc) in _RETRYABLE_SQLSTATES


def _lock_messages(customer_id: int) -> None:
    """Lock every message of the customer, in id order.

    A history row (a dispatcher's outcome, a provider's status report) written for one
    of them is checked against it at its writer's commit, which now waits for ours and
    then fails, instead of appearing between our deletes and failing our commit.
    """
    list(
        Message.objects.select_for_update()
        .filter(customer_id=customer_id)
        .order_by("id")
        .values_list("id", flat=True)
    )


def _erase(customer: Customer, source: str) -> ErasureSummary:
    with connection.cursor() as cursor:
        # First, before any row lock: wait for the provider calls in flight for them (a
        # dispatcher holds the send lock from a chunk's hand-off to its record) and keep
        # any new one from starting until this transaction ends.
        wait_for_sends(cursor, customer.pk)
    # Their pending broadcast copies, before any lock a broadcast expansion also takes.
    pending_broadcasts = broadcasts_erase(customer)
    # Webhook events before messages, as webhook processing takes them.
    webhooks_lock(customer)
    _lock_messages(customer.pk)
    locked = Customer.objects.select_for_update().filter(pk=customer.pk).first()
    if locked is None:
        raise Customer.DoesNotExist(f"customer {customer.pk} does not exist")
    # Again under the customer lock: a message created in between is locked too; none
    # can be created from here on.
    _lock_messages(locked.pk)
    addresses = customer_addresses(locked)
    suppressions_add(
        (channel, address, Suppression.Reason.ERASED, f"erasure requested via {source}")
        for channel, address in sorted(addresses)
    )
    waiting = list(
        Message.objects.filter(customer=locked, status__in=WAITING_STATUSES).values_list(
            "id", flat=True
        )
    )
    canceled = messages_cancel(message_ids=waiting, reason=_ERASED)
    # Claimed by a dispatcher but not yet handed off: its chunk finds them gone and does
    # not call the provider.
    unsent = Message.objects.filter(
        customer=locked, status=MessageStatus.SENDING, handed_off_at__isnull=True
    ).update(status=MessageStatus.CANCELED, attempt_id=None, last_error=_ERASED)
    counts: dict[str, int] = dict(pending_broadcasts)
    for part in (devinbox_erase(locked), webhooks_erase(locked), journeys_erase(locked)):
        for what, count in (part or {}).items():
            counts[what] = counts.get(what, 0) + count
    _forget_in_admin_log(locked)
    _total, by_model = locked.delete()
    for label, count in by_model.items():
        if count:
            counts[label] = counts.get(label, 0) + count
    with connection.cursor() as cursor:
        # The deferred foreign key checks run now, inside this attempt, rather than at a
        # caller's commit, where a failure could no longer be tried again.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    return ErasureSummary(
        suppressed_channels=sorted({channel for channel, _address in addresses}),
        canceled_messages=len(canceled) + unsent,
        deleted=counts,
    )
