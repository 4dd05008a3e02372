"""Writes for topics: create, replace (or create) and delete, each one atomic change.

A topic that anything refers to is not deleted. Messages and templates point at it
(PROTECT), and consent is evidence we must keep: deleting the topic would cascade its
subscriptions away and null the topic of its consent records, which would then read
as consent for *all* marketing topics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction

from orchestrator.consent.models import (
    CHANNELS,
    Topic,
    digest_template_problem,
    validate_names,
)


class TopicExists(Exception):
    """A topic with this key already exists."""


class TopicInUse(Exception):
    """The topic is referred to; ``references`` counts what refers to it."""

    def __init__(self, key: str, references: dict[str, int]) -> None:
        self.key = key
        self.references = references
        listed = ", ".join(f"{count} {what}" for what, count in references.items())
        super().__init__(f"Topic {key!r} is still referred to by {listed}; it cannot be deleted.")


def _clean(
    *,
    key: str,
    name: str,
    description: str,
    kind: str,
    default_opt_in: bool,
    channels: Sequence[str],
    quiet_hours: str,
    names: Any = None,
    digestible: bool = False,
    digest_template: str = "",
) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    try:
        validate_names(names or {})
    except ValidationError as exc:
        errors["names"] = list(exc.messages)
    try:
        validate_slug(key)
    except ValidationError as exc:
        errors["key"] = list(exc.messages)
    if not name.strip():
        errors["name"] = ["Must not be blank."]
    if kind not in Topic.Kind.values:
        errors["kind"] = [f"Must be one of {', '.join(Topic.Kind.values)}."]
    if quiet_hours not in Topic.QuietHours.values:
        errors["quiet_hours"] = [f"Must be one of {', '.join(Topic.QuietHours.values)}."]
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown or not channels:
        errors["channels"] = [f"Must be a non-empty list of {', '.join(CHANNELS)}."]
    elif problem := digest_template_problem(digest_template, channels):
        errors["digest_template"] = [problem]
    if errors:
        raise ValidationError(errors)
    return {
        "name": name.strip(),
        "description": description,
        "kind": kind,
        "default_opt_in": default_opt_in,
        "quiet_hours": quiet_hours,
        "digestible": bool(digestible),
        "digest_template": digest_template,
        "names": {k.strip(): v.strip() for k, v in (names or {}).items()},
        # Keep the canonical order and drop repeats, so a replayed definition is a no-op.
        "channels": [c for c in CHANNELS if c in set(channels)],
    }


def topic_create(
    *,
    key: str,
    name: str,
    description: str = "",
    kind: str = Topic.Kind.MARKETING,
    default_opt_in: bool = False,
    channels: Sequence[str] = CHANNELS,
    quiet_hours: str = Topic.QuietHours.DEFAULT,
    names: dict[str, str] | None = None,
    digestible: bool = False,
    digest_template: str = "",
) -> Topic:
    """Create a topic; raise TopicExists if the key is taken (the unique index decides)."""
    fields = _clean(
        key=key,
        name=name,
        description=description,
        kind=kind,
        default_opt_in=default_opt_in,
        channels=channels,
        quiet_hours=quiet_hours,
        names=names,
        digestible=digestible,
        digest_template=digest_template,
    )
    try:
        with transaction.atomic():
            return Topic.objects.create(key=key, **fields)
    except IntegrityError:
        raise TopicExists(f"A topic with key {key!r} already exists.") from None


def topic_put(
    *,
    key: str,
    name: str,
    description: str = "",
    kind: str = Topic.Kind.MARKETING,
    default_opt_in: bool = False,
    channels: Sequence[str] = CHANNELS,
    quiet_hours: str = Topic.QuietHours.DEFAULT,
    names: dict[str, str] | None = None,
    digestible: bool = False,
    digest_template: str = "",
) -> tuple[Topic, bool]:
    """Replace the topic ``key`` with this definition, creating it if new; (topic, created)."""
    fields = _clean(
        key=key,
        name=name,
        description=description,
        kind=kind,
        default_opt_in=default_opt_in,
        channels=channels,
        quiet_hours=quiet_hours,
        names=names,
        digestible=digestible,
        digest_template=digest_template,
    )
    for _ in range(3):
        with transaction.atomic():
            topic = Topic.objects.select_for_update().filter(key=key).first()
            if topic is not None:
                for attr, value in fields.items():
                    setattr(topic, attr, value)
                topic.save()
                return topic, False
        try:
            with transaction.atomic():
                return Topic.objects.create(key=key, **fields), True
        except IntegrityError:
            continue  # created concurrently: go round and replace it
    raise RuntimeError(f"could not put topic {key!r}")


def topic_delete(*, key: str) -> None:
    """Delete an unreferenced topic; raise Topic.DoesNotExist or TopicInUse."""
    try:
        with transaction.atomic():
            topic = Topic.objects.select_for_update().get(key=key)
            references = {
                "messages": topic.messages.count(),
                "templates": topic.templates.count(),
                "consent records": topic.consent_records.count(),
                "subscriptions": topic.subscriptions.count(),
            }
            references = {what: n for what, n in references.items() if n}
            if references:
                raise TopicInUse(key, references)
            topic.delete()
    except IntegrityError:
        # A message or template referring to it was committed while we deleted: the
        # deferred foreign key check refused our delete at commit.
        raise TopicInUse(key, {"rows written meanwhile": 1}) from None
