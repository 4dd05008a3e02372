"""Reads of delivery: the fatigue overview and the customer's "why did I get this?".

The overview is two aggregate queries over indexed columns (history rows carry a
``code`` for what held them; messages a ``decided_at``), bounded to recent days. The
customer explanation is read from the message's decision trail (see ``trail``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.db import connection
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop as N_
from django.utils.translation import pgettext, pgettext_lazy

from orchestrator.delivery.holds import describe_cadence
from orchestrator.delivery.models import FrequencyRule

#: Buckets of the "messages per customer per week" distribution.
WEEKLY_BUCKETS = ("1", "2", "3", "4", "5", "6-9", "10+")


@dataclass(frozen=True)
class HoldsByDay:
    days: list[str]
    #: hold label -> {"deferred": [per day], "dropped": [...], "expired": [...]}
    by_reason: dict[str, dict[str, list[int]]]
    totals: dict[str, int]


def _label(code: str, rule_names: dict[str, str]) -> str:
    if code.startswith("rule:"):
        return rule_names.get(code[5:], code[5:])
    return {
        "quiet_hours": "Quiet hours",
        "paused": "Paused by the customer",
        "personal_cap": "The customer's own limit",
    }.get(code, code)


def holds_by_day(*, days: int = 14, today: dt.date | None = None) -> HoldsByDay:
    """Messages held (deferred), dropped and expired by the fatigue policy, per reason per day.

    A message held by two causes at once counts under each."""
    today = today or timezone.localdate()
    start = today - dt.timedelta(days=days - 1)
    labels = [(start + dt.timedelta(days=i)).isoformat() for i in range(days)]
    index = {label: i for i, label in enumerate(labels)}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, cause, status, count(*)
            FROM delivery_messageevent
            -- A hold's code lists every cause (fatigue.hold_code): it counts under each.
            CROSS JOIN LATERAL unnest(string_to_array(code, ',')) AS cause
            WHERE occurred_at >= %s AND status IN ('deferred', 'suppressed', 'expired')
              AND code <> '' AND code NOT LIKE 'consent:%%'
            GROUP BY 1, 2, 3
            """,
            [dt.datetime.combine(start, dt.time(0), tzinfo=dt.UTC)],
        )
        rows = cursor.fetchall()
    rule_names = dict(FrequencyRule.objects.values_list("key", "name"))
    by_reason: dict[str, dict[str, list[int]]] = {}
    totals: dict[str, int] = defaultdict(int)
    kinds = {"deferred": "deferred", "suppressed": "dropped", "expired": "expired"}
    for day, code, status, count in rows:
        if day.isoformat() not in index:
            continue
        label = _label(code, rule_names)
        bucket = by_reason.setdefault(label, {k: [0] * days for k in kinds.values()})
        bucket[kinds[status]][index[day.isoformat()]] += count
        totals[label] += count
    return HoldsByDay(labels, by_reason, dict(totals))


@dataclass(frozen=True)
class WeeklyDistribution:
    buckets: list[str]
    customers: list[int]
    #: Customers who got nothing in the week.
    none: int
    median: float
    p95: int


def messages_per_customer_week(*, now: dt.datetime | None = None) -> WeeklyDistribution:
    """How many messages each customer got in the last 7 days, as a histogram."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH per AS (
                SELECT customer_id, count(*) AS n FROM delivery_message
                WHERE sent_at >= %s AND sent_at < %s GROUP BY customer_id
            )
            SELECT
                CASE WHEN n >= 10 THEN '10+' WHEN n >= 6 THEN '6-9' ELSE n::text END,
                count(*),
                (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY n) FROM per),
                (SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY n) FROM per),
                (SELECT count(*) FROM per)
            FROM per GROUP BY 1
            """,
            [now - dt.timedelta(days=7), now],
        )
        rows = cursor.fetchall()
        cursor.execute("SELECT count(*) FROM audience_customer")
        (customers,) = cursor.fetchone()
    counts = {bucket: count for bucket, count, *_rest in rows}
    median = float(rows[0][2]) if rows else 0.0
    p95 = int(rows[0][3]) if rows else 0
    reached = int(rows[0][4]) if rows else 0
    return WeeklyDistribution(
        list(WEEKLY_BUCKETS),
        [counts.get(b, 0) for b in WEEKLY_BUCKETS],
        max(customers - reached, 0),
        median,
        p95,
    )


# --- why a customer got a message ---------------------------------------------------

#: Channel words inside a sentence ("by email"), as the customer reads them.
CHANNEL_WORDS = {
    "email": pgettext_lazy("channel in a sentence", "email"),
    "sms": pgettext_lazy("channel in a sentence", "text message"),
    "whatsapp": pgettext_lazy("channel in a sentence", "WhatsApp"),
    "line": pgettext_lazy("channel in a sentence", "LINE"),
}

#: Statuses of a message that went out to the provider.
_WENT_OUT = ("sending", "sent", "delivered", "undelivered", "bounced", "opened", "clicked")
_WENT_OUT += ("replied",)


def channel_word(channel: str) -> str:
    return str(CHANNEL_WORDS.get(channel) or pgettext("channel in a sentence", "another channel"))


def _say(text: str, fallback: str, **values: object) -> str:
    """``text`` filled in, or ``fallback`` (a sentence without slots) if a value is missing:
    the customer never reads a sentence with a hole in it."""
    if all(str(v).strip() for v in values.values()):
        return text % {k: str(v) for k, v in values.items()}
    return fallback


def _local(iso: str | None, tz: ZoneInfo) -> str:
    if not iso:
        return ""
    try:
        moment = dt.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return date_format(moment.astimezone(tz).replace(tzinfo=None), "DATETIME_FORMAT")


def customer_explanation(message, *, journey_name: str | None = None) -> list[str]:
    """Why a customer got (or did not get) a message, in sentences they can read.

    Built from the message's decision trail, in the active language; for the "why am I
    getting this?" part of the preference center, the admin and the API. Names are the
    ones written for customers (``Topic.name_in``; ``journey_name``, the series' customer
    name, which the caller reads from journeys - a message only knows the journey's key,
    which is never shown). Every cause of a hold is told; a message that was not sent
    says so and why.
    """
    trail = [e for e in message.explanation or [] if isinstance(e, dict)]
    topic = message.topic
    topic_name = topic.name_in()
    channel = channel_word(message.channel)
    tz = ZoneInfo(getattr(message.customer, "timezone", "") or "UTC")
    status = str(message.status)
    lines = [_about(message, topic, topic_name, channel, went=status in _WENT_OUT)]
    if message.journey:
        lines.append(
            _say(
                _("It is part of the series “%(journey)s”."),
                _("It is part of a series of messages."),
                journey=journey_name or "",
            )
        )
    holds = [
        e
        for e in trail
        if e.get("step") == "policy" and e.get("decision") in ("deferred", "suppressed", "expired")
    ]
    last_hold = holds[-1] if holds else None
    if status in _WENT_OUT:
        lines.extend(_came_by(message, trail, topic_name, channel))
        if last_hold is not None:
            when = _local((last_hold.get("details") or {}).get("send_after"), tz)
            fallback = _("We held it for a while before sending it.")
            lines.extend(_held(last_hold, when, fallback, tz))
        if status in ("undelivered", "bounced"):
            lines.append(
                _say(
                    _("It could not be delivered to you by %(channel)s."),
                    _("It could not be delivered to you."),
                    channel=channel,
                )
            )
    elif status in ("deferred", "queued", "scheduled") and message.requested_channel == "preferred":
        lines.append(
            _(
                "It will come by %(channel)s, the first channel in your preferred order that "
                "can reach you."
            )
            % {"channel": channel}
        )
    if status == "deferred":
        when = _local(
            (last_hold.get("details") or {}).get("send_after") if last_hold else None, tz
        ) or _local(message.send_after.isoformat() if message.send_after else None, tz)
        fallback = _("We are holding it for now.")
        if last_hold is None:
            lines.append(_say(_("We held it until %(when)s your time."), fallback, when=when))
        else:
            lines.extend(_held(last_hold, when, fallback, tz))
    elif status in ("queued", "scheduled"):
        when = _local(message.send_after.isoformat() if message.send_after else None, tz)
        lines.append(
            _say(
                _("It has not been sent yet; it is due at %(when)s your time."),
                _("It has not been sent yet."),
                when=when,
            )
        )
    elif status == "held" or _digest_entry(trail, "canceled"):
        lines.append(_digest_hold(trail, status))
    elif status not in _WENT_OUT:
        lines.extend(_not_sent(message, trail, last_hold, topic_name, channel, tz))
    if status != "held" and any(
        e.get("step") == "digest" and (e.get("details") or {}).get("released")
        for e in trail
        if e.get("decision") != "held"
    ):
        lines.append(_("It was held for your digest; you then chose to get these as they happen."))
    digest = (message.data or {}).get("digest") if isinstance(message.data, dict) else None
    if isinstance(digest, dict) and status in _WENT_OUT:
        lines.append(
            _("It brings together %(count)s messages we held for your digest.")
            % {"count": digest.get("count", 0)}
        )
    return lines


def _digest_entry(trail: list[dict], decision: str) -> dict | None:
    return next(
        (e for e in reversed(trail) if e.get("step") == "digest" and e.get("decision") == decision),
        None,
    )


def _digest_hold(trail: list[dict], status: str) -> str:
    """A message held for (or folded into) a digest, in the customer's words."""
    if status != "held":
        return _("It was not sent on its own: it came to you in a digest, with the others.")
    details = (_digest_entry(trail, "held") or {}).get("details") or {}
    if details.get("released"):
        return _(
            "You chose to get these as they happen: it goes now, with the others held so "
            "far, in one last digest."
        )
    if details.get("at"):
        which = describe_cadence(details.get("cadence", ""), details.get("weekday"), details["at"])
        return _("It is held for %(digest)s, and will come together with the others.") % {
            "digest": which
        }
    return _("It is held to come together with related updates in one message.")


def _about(message, topic, topic_name: str, channel: str, *, went: bool) -> str:
    if topic.kind == "transactional":
        return _(
            "This is a service message about %(topic)s. It is sent even if you have opted "
            "out of marketing."
        ) % {"topic": topic_name}
    consent = (message.rendered or {}).get("consent", "") if went else ""
    if consent == "subscribed":
        return _("You subscribed to %(topic)s by %(channel)s.") % {
            "topic": topic_name,
            "channel": channel,
        }
    if consent == "default_opt_in":
        return _("You receive %(topic)s by %(channel)s unless you opt out.") % {
            "topic": topic_name,
            "channel": channel,
        }
    return _("This message is about %(topic)s.") % {"topic": topic_name}


def _came_by(message, trail: list[dict], topic_name: str, channel: str) -> list[str]:
    """How the channel it came by was chosen: a switch if there was one, else the order."""
    for entry in reversed(trail):
        details = entry.get("details") or {}
        if entry.get("step") == "route" and details.get("to") == message.channel:
            previous = channel_word(details.get("from", ""))
            if details.get("why") == "consent":
                return [
                    _(
                        "It came by %(channel)s instead of %(previous)s, because you do not "
                        "get %(topic)s by %(previous)s."
                    )
                    % {"channel": channel, "previous": previous, "topic": topic_name}
                ]
            return [
                _(
                    "It came by %(channel)s instead of %(previous)s, because you had already "
                    "had as many messages by %(previous)s as we send for now."
                )
                % {"channel": channel, "previous": previous}
            ]
        if entry.get("step") == "send" and entry.get("decision") == "fallback":
            return [
                _("It came by %(channel)s because it could not be delivered the first way.")
                % {"channel": channel}
            ]
    if message.requested_channel == "preferred":
        return [
            _(
                "It came by %(channel)s, the first channel in your preferred order that could "
                "reach you."
            )
            % {"channel": channel}
        ]
    return []


_PER = {
    "day": pgettext_lazy("a cap's window", "today"),
    "week": pgettext_lazy("a cap's window", "this week"),
    "month": pgettext_lazy("a cap's window", "this month"),
}


def _held(entry: dict, when: str, fallback: str, tz: ZoneInfo) -> list[str]:
    """A hold: what held it, then until when (quiet hours alone say both in one line)."""
    causes = (entry.get("details") or {}).get("causes")
    if (
        when
        and isinstance(causes, list)
        and len(causes) == 1
        and isinstance(causes[0], dict)
        and causes[0].get("code") == "quiet_hours"
        and causes[0].get("in_force", True)
    ):
        return [_("We held it until %(when)s your time, because of quiet hours.") % {"when": when}]
    until = _say(_("We held it until %(when)s your time."), fallback, when=when)
    return [*_causes(entry, tz), until]


def _causes(entry: dict, tz: ZoneInfo) -> list[str]:
    """One sentence per cause of a hold, those in force first (see ``policy.Decision``)."""
    details = entry.get("details") or {}
    causes = details.get("causes")
    if not isinstance(causes, list) or not causes:
        # Recorded before holds listed their causes: the reason's words are all there is.
        return [_legacy_cause(entry.get("reason", ""))]
    return [_cause_sentence(c, tz) for c in causes if isinstance(c, dict)]


def _legacy_cause(reason: str) -> str:
    if "quiet hours" in reason:
        return _("Your quiet hours were in force.")
    if "your own limit" in reason:
        return _("You had already had as many messages as you asked us to send.")
    if "paused" in reason:
        return _("You had paused marketing messages.")
    return _("You had already had as many messages as we send for now.")


def _cause_sentence(cause: dict, tz: ZoneInfo) -> str:
    code = str(cause.get("code", ""))
    in_force = bool(cause.get("in_force", True))
    count = cause.get("count")
    count = str(count) if isinstance(count, int) and count > 0 else ""
    if code == "quiet_hours":
        window = str(cause.get("window", ""))
        if in_force:
            return _say(
                _("Your quiet hours (%(window)s) were in force."),
                _("Your quiet hours were in force."),
                window=window,
            )
        return _say(
            _("After that, it waited for your quiet hours (%(window)s) to end."),
            _("After that, it waited for your quiet hours to end."),
            window=window,
        )
    if code == "paused":
        when = _local(cause.get("paused_until"), tz)
        if in_force:
            return _say(
                _("You had paused marketing messages until %(when)s."),
                _("You had paused marketing messages."),
                when=when,
            )
        return _say(
            _("After that, it waited for your pause to end at %(when)s."),
            _("After that, it waited for your pause to end."),
            when=when,
        )
    if code == "personal_cap":
        if not in_force:
            return _("After that, it waited to keep within the limit you set for yourself.")
        return _say(
            _("You had already had %(count)s messages this week, the most you asked for."),
            _("You had already had as many messages as you asked us to send."),
            count=count,
        )
    if not in_force:
        return _("After that, it waited so that you do not get too many messages at once.")
    if cause.get("kind") == "gap":
        return _("We keep some time between messages, and the last one had only just gone out.")
    per = _PER.get(str(cause.get("calendar", "")), "")
    return _say(
        _("You had already had %(count)s messages %(per)s, as many as we send."),
        _("You had already had as many messages as we send for now."),
        count=count,
        per=per,
    )


_CHOICES = N_("We did not send it, because of your choices about the messages we send.")

#: A consent refusal (``consent.selectors`` codes): the sentence, and one without slots.
_CONSENT_SENTENCES = {
    "unsubscribed": (
        N_("We did not send it: you do not want %(topic)s by %(channel)s."),
        N_("We did not send it: you asked not to get these messages."),
    ),
    "no_opt_in": (
        N_("We did not send it: you have not asked for %(topic)s by %(channel)s."),
        N_("We did not send it: you have not asked for these messages."),
    ),
    "channel_opted_out": (
        N_("We did not send it: you switched off marketing by %(channel)s."),
        N_("We did not send it: you switched off marketing on that channel."),
    ),
    "channel_not_allowed": (
        N_("We did not send it: we do not send %(topic)s by %(channel)s."),
        N_("We did not send it: we do not send these messages that way."),
    ),
    "no_address": (
        N_("We did not send it: we have no %(channel)s address for you."),
        N_("We did not send it: we have no address for you on that channel."),
    ),
    "suppressed": (
        N_("We did not send it: we can no longer send to your %(channel)s address."),
        N_("We did not send it: we can no longer send to that address."),
    ),
}


def _not_sent(
    message, trail: list[dict], last_hold: dict | None, topic_name: str, channel: str, tz
) -> list[str]:
    """Expired, suppressed, canceled or failed: it was not sent, and why."""
    status = str(message.status)
    last = trail[-1] if trail else {}
    step = last.get("step")
    if status == "suppressed" and step == "consent":
        code = str((last.get("details") or {}).get("code", ""))
        text, fallback = _CONSENT_SENTENCES.get(
            code,
            (_CHOICES, _CHOICES),
        )
        return [_say(_(text), _(fallback), topic=topic_name, channel=channel)]
    if status == "suppressed":
        lines = [_("We did not send it: you had already had as many messages as we send.")]
        return lines + (_causes(last_hold, tz) if last_hold else [])
    if status == "expired":
        until = _local(message.expires_at.isoformat() if message.expires_at else None, tz)
        lines = [
            _say(
                _(
                    "We did not send it: it was only worth sending until %(when)s, and it "
                    "could not go before then."
                ),
                _("We did not send it: it was no longer relevant by the time it could go."),
                when=until,
            )
        ]
        return lines + (_causes(last_hold, tz) if last_hold else [])
    if status == "canceled":
        return [_("We did not send it: it was called off before it went out.")]
    return [
        _say(
            _("We did not send it: we could not send it by %(channel)s."),
            _("We did not send it: something went wrong on our side."),
            channel=channel,
        )
    ]


def digest_held_counts(customer_id: int) -> dict[int, int]:
    """Messages waiting in each open topic digest of the customer: topic id -> count."""
    from django.db.models import Count

    from orchestrator.delivery.models import Digest, Message, MessageStatus

    return dict(
        Message.objects.filter(
            customer_id=customer_id,
            status=MessageStatus.HELD,
            digest__status=Digest.Status.OPEN,
            digest__kind=Digest.Kind.TOPIC,
        )
        .values("topic_id")
        .annotate(n=Count("id"))
        .values_list("topic_id", "n")
    )
