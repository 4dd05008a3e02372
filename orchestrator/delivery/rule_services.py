"""Writes for frequency rules: create, replace (or create) and delete, validated with
messages a marketer or a client can act on (rather than a violated check constraint)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction

from orchestrator.consent.models import CHANNELS, Topic
from orchestrator.delivery.models import FrequencyRule

#: Longest rolling window or gap a rule may use: the policy looks back this far.
MAX_WINDOW = dt.timedelta(days=31)


class RuleExists(Exception):
    """A rule with this key already exists."""


def clean_rule(
    *,
    key: str,
    name: str,
    description: str = "",
    active: bool = True,
    kind: str = FrequencyRule.Kind.CAP,
    scope: str = FrequencyRule.Scope.GLOBAL,
    channel: str = "",
    topic: str | Topic | None = None,
    journey: str = "",
    limit: int = 1,
    window: dt.timedelta | None = None,
    calendar: str = "",
    applies_to: str = FrequencyRule.AppliesTo.MARKETING,
    action: str = FrequencyRule.Action.DEFER,
) -> dict[str, Any]:
    """Validate a rule definition; return model field values or raise ValidationError."""
    errors: dict[str, list[str]] = {}

    def bad(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    try:
        validate_slug(key)
    except ValidationError as exc:
        errors["key"] = list(exc.messages)
    if not (name or "").strip():
        bad("name", "Must not be blank.")
    for field, value, choices in (
        ("kind", kind, FrequencyRule.Kind),
        ("scope", scope, FrequencyRule.Scope),
        ("applies_to", applies_to, FrequencyRule.AppliesTo),
        ("action", action, FrequencyRule.Action),
    ):
        if value not in choices.values:
            bad(field, f"Must be one of {', '.join(choices.values)}.")
    topic_row = None
    if scope == "channel" and channel not in CHANNELS:
        bad("channel", f"A channel rule needs one of {', '.join(CHANNELS)}.")
    if scope == "topic":
        topic_row = topic if isinstance(topic, Topic) else Topic.objects.filter(key=topic).first()
        if topic_row is None:
            bad("topic", f"A topic rule needs an existing topic key (got {topic!r}).")
    if scope == "journey" and not (journey or "").strip():
        bad("journey", "A journey rule needs the journey's key.")
    if not isinstance(limit, int) or limit < 1:
        bad("limit", "Must be a whole number of at least 1.")
    if window is not None and not (dt.timedelta(minutes=1) <= window <= MAX_WINDOW):
        bad("window", "Must be between 1 minute and 31 days.")
    if kind == "gap":
        if window is None:
            bad("window", "A minimum-gap rule needs the gap as its window.")
        if calendar:
            bad("calendar", "A minimum-gap rule has no calendar window.")
    elif window is None and not calendar:
        bad("window", "Give a rolling window or a calendar window (day, week, month).")
    elif window is not None and calendar:
        bad("calendar", "Give a rolling window or a calendar window, not both.")
    if calendar and calendar not in FrequencyRule.Calendar.values:
        bad("calendar", f"Must be one of {', '.join(FrequencyRule.Calendar.values)}.")
    if errors:
        raise ValidationError(errors)
    return {
        "name": name.strip(),
        "description": description or "",
        "active": active,
        "kind": kind,
        "scope": scope,
        "channel": channel if scope == "channel" else "",
        "topic": topic_row,
        "journey": journey.strip() if scope == "journey" else "",
        "limit": 1 if kind == "gap" else limit,
        "window": window,
        "calendar": "" if kind == "gap" else calendar,
        "applies_to": applies_to,
        "action": action,
    }


def frequency_rule_create(**definition: Any) -> FrequencyRule:
    fields = clean_rule(**definition)
    try:
        with transaction.atomic():
            return FrequencyRule.objects.create(key=definition["key"], **fields)
    except IntegrityError:
        raise RuleExists(
            f"A frequency rule with key {definition['key']!r} already exists."
        ) from None


def frequency_rule_put(**definition: Any) -> tuple[FrequencyRule, bool]:
    """Replace the rule ``key`` with this definition, creating it if new; (rule, created)."""
    fields = clean_rule(**definition)
    with transaction.atomic():
        return FrequencyRule.objects.update_or_create(key=definition["key"], defaults=fields)


def frequency_rule_delete(*, key: str) -> None:
    """Delete a rule (messages keep the decisions it made); raise DoesNotExist if unknown."""
    deleted, _by_model = FrequencyRule.objects.filter(key=key).delete()
    if not deleted:
        raise FrequencyRule.DoesNotExist(key)
