"""Writes for message templates and their per-channel, per-locale variants.

Every Liquid source is syntax-checked before anything is written, and all problems
come back at once as field errors naming the variant, the field and the line, e.g.
``{"variants.0.body": ["line 2: missing expression"]}``.

A variant's provider options (a WhatsApp Content template, a LINE template or flex
message) are checked against its channel by ``provider_options_problem``, for the
admin form and the API alike.

A template whose topic is marketing must carry an opt-out link in what the customer
reads (``opt_out_link_problem``): the law asks for a visible one (CAN-SPAM, Japan's
Act on Specified Electronic Mail), so for email the List-Unsubscribe header alone
is not enough.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction

from orchestrator.audience.validators import validate_locale
from orchestrator.consent.models import CHANNELS, Topic
from orchestrator.delivery.models import MessageTemplate, TemplateVariant
from orchestrator.delivery.rendering import (
    TemplateProblem,
    check_syntax,
    option_strings,
    variables_used,
)

VARIANT_FIELDS = ("subject", "body", "html")


class TemplateExists(Exception):
    """A template with this key already exists."""


class TemplateInUse(Exception):
    """Messages refer to the template, so it cannot be deleted."""

    def __init__(self, key: str, messages: int) -> None:
        self.key = key
        self.messages = messages
        super().__init__(
            f"Template {key!r} is referred to by {messages} message(s); it cannot be deleted. "
            "Keep it, or change its variants instead."
        )


#: A Twilio Content template SID: WhatsApp outside the session window sends only these.
_CONTENT_SID = re.compile(r"^HX[0-9a-f]{32}$")


def provider_options_problem(channel: str | None, options: Any) -> str:
    """Why a variant's provider options cannot work for its channel, or ""."""
    if not options:
        return ""
    if not isinstance(options, dict):
        return "Provider options must be a JSON object."
    if channel == "whatsapp":
        unknown = set(options) - {"content_sid", "content_variables"}
        if unknown:
            return f"WhatsApp takes content_sid and content_variables, not {sorted(unknown)}."
        if not _CONTENT_SID.match(str(options.get("content_sid", ""))):
            return "content_sid must be an approved Content template SID: HX and 32 hex digits."
        variables = options.get("content_variables", {})
        if not isinstance(variables, dict) or not all(
            isinstance(v, str) for v in variables.values()
        ):
            return 'content_variables must map placeholders to text, e.g. {"1": "..."}.'
    elif channel == "line":
        if options.get("kind") not in ("template", "flex"):
            return 'LINE options need "kind": "template" or "flex".'
    else:
        return f"{channel} variants take no provider options."
    for text in option_strings(options):
        try:
            check_syntax(text, field="provider_options")
        except TemplateProblem as problem:
            return f"Liquid in provider options: {problem.args[0]}"
    return ""


def opt_out_link_problem(*, channel: str, locale: str, field: str, source: str) -> str:
    """Why one part of a marketing variant lacks the opt-out link it needs, or "".

    Every part a customer may be shown needs one: an email's text body and its html
    (a client shows one or the other), an SMS or chat body. SMS and chat need
    ``{{ preferences_url }}``, rendered there as a short ``/p/...`` link; email may
    use either link.
    """
    if not source.strip():
        return ""
    used = variables_used(source, field == "html")
    if channel == "email":
        if used & {"unsubscribe_url", "preferences_url"}:
            return ""
        return (
            f"The {channel}/{locale} variant is marketing and its {field} has no opt-out "
            "link: add {{ unsubscribe_url }} (one-click unsubscribe from this topic) or "
            "{{ preferences_url }} (the preference center)."
        )
    if "preferences_url" in used:
        return ""
    return (
        f"The {channel}/{locale} variant is marketing and its {field} has no opt-out "
        "link: add {{ preferences_url }} (a short link to the preference center)."
    )


def marketing_link_errors(variants: Sequence[Mapping[str, str]]) -> dict[str, list[str]]:
    """Field errors, keyed ``variants.<i>.<field>``, for variants of a marketing template
    missing their opt-out link."""
    errors: dict[str, list[str]] = {}
    for index, variant in enumerate(variants):
        fields = ("body", "html") if variant.get("channel") == "email" else ("body",)
        for name in fields:
            problem = opt_out_link_problem(
                channel=variant.get("channel", ""),
                locale=variant.get("locale", ""),
                field=name,
                source=variant.get(name) or "",
            )
            if problem:
                errors[f"variants.{index}.{name}"] = [problem]
    return errors


def _problem_text(problem: TemplateProblem) -> str:
    message = problem.args[0]
    return f"line {problem.line}: {message}" if problem.line else message


def _clean_variants(variants: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict]:
    errors: dict[str, list[str]] = {}
    cleaned: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    if not variants:
        errors["variants"] = ["At least one variant is required."]
    for index, raw in enumerate(variants):
        where = f"variants.{index}"
        variant: dict[str, Any] = {
            "channel": raw.get("channel", ""),
            "locale": raw.get("locale") or "en",
            **{name: raw.get(name) or "" for name in VARIANT_FIELDS},
        }
        # Left out, a variant keeps the options it has (set in the admin, say).
        if "provider_options" in raw:
            variant["provider_options"] = raw["provider_options"] or {}
            problem = provider_options_problem(variant["channel"], variant["provider_options"])
            if problem:
                errors.setdefault(f"{where}.provider_options", []).append(problem)
        if variant["channel"] not in CHANNELS:
            errors[f"{where}.channel"] = [f"Must be one of {', '.join(CHANNELS)}."]
        try:
            validate_locale(variant["locale"])
        except ValidationError as exc:
            errors[f"{where}.locale"] = list(exc.messages)
        pair = (variant["channel"], variant["locale"])
        if pair in seen:
            errors[where] = [f"A second {pair[0]} variant for locale {pair[1]!r}."]
        seen.add(pair)
        for name in VARIANT_FIELDS:
            try:
                check_syntax(variant[name], field=f"{where}.{name}", html=name == "html")
            except TemplateProblem as problem:
                errors.setdefault(problem.field, []).append(_problem_text(problem))
        # Rendering refuses a blank message and an email without a subject; say so now,
        # not when the first send fails.
        if not variant["body"].strip() and not variant["html"].strip():
            errors.setdefault(f"{where}.body", []).append("A body (or, for email, html) is needed.")
        if variant["channel"] == "email" and not variant["subject"].strip():
            errors.setdefault(f"{where}.subject", []).append("An email variant needs a subject.")
        if variant["channel"] != "email" and variant["html"]:
            errors.setdefault(f"{where}.html", []).append("Only email variants have html.")
        cleaned.append(variant)
    return cleaned, errors


def _clean(
    *, key: str, name: str, topic: str | None, variants: Sequence[Mapping[str, Any]]
) -> tuple[Topic | None, list[dict[str, Any]]]:
    cleaned, errors = _clean_variants(variants)
    try:
        validate_slug(key)
    except ValidationError as exc:
        errors["key"] = list(exc.messages)
    if not name.strip():
        errors["name"] = ["Must not be blank."]
    topic_row = None
    if topic is not None:
        topic_row = Topic.objects.filter(key=topic).first()
        if topic_row is None:
            errors["topic"] = [f"Unknown topic {topic!r}."]
    if topic_row is not None and topic_row.kind == Topic.Kind.MARKETING:
        for name, problems in marketing_link_errors(cleaned).items():
            if name not in errors:  # a syntax error is the first thing to fix
                errors[name] = problems
    if errors:
        raise ValidationError(errors)
    return topic_row, cleaned


def _write_variants(template: MessageTemplate, variants: list[dict[str, Any]]) -> None:
    """Make the template's variants exactly ``variants``, keeping rows that stay.

    A variant given without ``provider_options`` keeps the ones it has.
    """
    wanted = {(v["channel"], v["locale"]): v for v in variants}
    existing = {(v.channel, v.locale): v for v in template.variants.all()}
    stale = [row.pk for pair, row in existing.items() if pair not in wanted]
    if stale:
        TemplateVariant.objects.filter(pk__in=stale).delete()
    for pair, variant in wanted.items():
        row = existing.get(pair)
        if row is None:
            TemplateVariant.objects.create(template=template, **variant)
            continue
        names = [name for name in (*VARIANT_FIELDS, "provider_options") if name in variant]
        if any(getattr(row, name) != variant[name] for name in names):
            for name in names:
                setattr(row, name, variant[name])
            row.save(update_fields=[*names, "updated_at"])


def template_create(
    *,
    key: str,
    name: str,
    variants: Sequence[Mapping[str, Any]],
    topic: str | None = None,
    description: str = "",
    track_clicks: bool = True,
) -> MessageTemplate:
    """Create a template with its variants; raise ValidationError or TemplateExists."""
    topic_row, cleaned = _clean(key=key, name=name, topic=topic, variants=variants)
    try:
        with transaction.atomic():
            template = MessageTemplate.objects.create(
                key=key,
                name=name.strip(),
                topic=topic_row,
                description=description,
                track_clicks=track_clicks,
            )
            _write_variants(template, cleaned)
    except IntegrityError:
        raise TemplateExists(f"A template with key {key!r} already exists.") from None
    return template


def template_put(
    *,
    key: str,
    name: str,
    variants: Sequence[Mapping[str, Any]],
    topic: str | None = None,
    description: str = "",
    track_clicks: bool = True,
) -> tuple[MessageTemplate, bool]:
    """Replace template ``key`` and all its variants, creating it if new; (template, created).

    Messages already queued keep pointing at the template and render its variants as
    they are at send time.
    """
    topic_row, cleaned = _clean(key=key, name=name, topic=topic, variants=variants)
    for _ in range(3):
        with transaction.atomic():
            template = MessageTemplate.objects.select_for_update().filter(key=key).first()
            if template is not None:
                template.name = name.strip()
                template.topic = topic_row
                template.description = description
                template.track_clicks = track_clicks
                template.save()
                _write_variants(template, cleaned)
                return template, False
        try:
            with transaction.atomic():
                template = MessageTemplate.objects.create(
                    key=key,
                    name=name.strip(),
                    topic=topic_row,
                    description=description,
                    track_clicks=track_clicks,
                )
                _write_variants(template, cleaned)
                return template, True
        except IntegrityError:
            continue  # created concurrently: go round and replace it
    raise RuntimeError(f"could not put template {key!r}")


def template_delete(*, key: str) -> None:
    """Delete a template no message refers to; raise MessageTemplate.DoesNotExist or InUse."""
    try:
        with transaction.atomic():
            template = MessageTemplate.objects.select_for_update().get(key=key)
            # Counted first: on PROTECT the collector would load every referring message.
            messages = template.messages.count()
            if messages:
                raise TemplateInUse(key, messages)
            template.delete()
    except IntegrityError:
        # A message referring to it committed while we deleted (deferred foreign key check).
        raise TemplateInUse(key, 1) from None
