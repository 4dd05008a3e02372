"""The decision trail each message carries: why it was queued, deferred, suppressed or sent."""

from __future__ import annotations

from typing import Any

from django.utils import timezone


def explain(step: str, decision: str, reason: str, **details: Any) -> dict[str, Any]:
    """One entry: ``step`` (created, consent, render, send, policy...), ``decision``, prose."""
    entry: dict[str, Any] = {
        "at": timezone.now().isoformat(),
        "step": step,
        "decision": decision,
        "reason": reason,
    }
    if details:
        entry["details"] = details
    return entry


_CHANNEL_NAMES = {"email": "email", "sms": "text message", "whatsapp": "WhatsApp", "line": "LINE"}


def customer_explanation(message) -> list[str]:
    """Why a customer got (or did not yet get) a message, in sentences they can read.

    Built from the message's decision trail; for the "why am I getting this?" part of
    the preference center. Marked for translation.
    """
    from django.utils.formats import date_format
    from django.utils.translation import gettext as _

    topic = message.topic
    channel = _CHANNEL_NAMES.get(message.channel, message.channel)
    lines: list[str] = []
    if topic.kind == "transactional":
        lines.append(
            _(
                "This is a service message about %(topic)s. It is sent even if you have opted "
                "out of marketing."
            )
            % {"topic": topic.name}
        )
    else:
        consent = (message.rendered or {}).get("consent", "")
        if consent == "subscribed":
            lines.append(
                _("You subscribed to %(topic)s by %(channel)s.")
                % {"topic": topic.name, "channel": channel}
            )
        elif consent == "default_opt_in":
            lines.append(
                _("You receive %(topic)s by %(channel)s unless you opt out.")
                % {"topic": topic.name, "channel": channel}
            )
        else:
            lines.append(_("This message is about %(topic)s.") % {"topic": topic.name})
    if message.journey:
        lines.append(_("It is part of the series “%(journey)s”.") % {"journey": message.journey})
    if message.requested_channel == "preferred":
        lines.append(
            _(
                "It came by %(channel)s, the first channel in your preferred order that could "
                "reach you."
            )
            % {"channel": channel}
        )
    holds = [
        e
        for e in message.explanation or []
        if e.get("step") == "policy" and e.get("decision") in ("deferred", "suppressed", "expired")
    ]
    for entry in holds[-1:]:
        reason = entry.get("reason", "")
        when = (entry.get("details") or {}).get("send_after")
        local_when = ""
        if when:
            import datetime as dt
            from zoneinfo import ZoneInfo

            moment = dt.datetime.fromisoformat(when).astimezone(
                ZoneInfo(message.customer.timezone or "UTC")
            )
            local_when = date_format(moment.replace(tzinfo=None), "DATETIME_FORMAT")
        if "quiet hours" in reason:
            lines.append(
                _("We held it until %(when)s your time, because of quiet hours.")
                % {"when": local_when}
            )
        elif "your own limit" in reason:
            lines.append(_("We held it to keep within the limit you set for yourself."))
        elif "paused" in reason:
            lines.append(
                _("We held it because you paused messages until %(when)s.") % {"when": local_when}
            )
        elif entry.get("decision") == "deferred":
            lines.append(
                _(
                    "We held it until %(when)s your time, so that you do not get too many "
                    "messages at once."
                )
                % {"when": local_when}
            )
        elif entry.get("decision") == "suppressed":
            lines.append(_("We did not send it: you had already had enough messages from us."))
        else:
            lines.append(
                _("We did not send it: it was no longer relevant by the time it could go.")
            )
    return lines
