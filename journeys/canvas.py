"""What the admin's journey canvas reads: problems per step, the catalog, changes, counts.

The canvas edits the same JSON definition as ``PUT /api/v1/journeys/{key}`` and is
checked by the same validation (``journeys.definition.validate``); this module only
shapes things for it: each problem tied to its step, the vocabulary of the side panel
(step kinds with their field specs from ``journeys.canvas_fields``, templates, topics,
segments, events and attributes seen), the changes of a draft against the published
version in words, live counts per step and per edge from the step log, a template
rendered for a sample customer, and the version history. The HTTP side is in
``journeys.admin`` (an entry point, which may also run the API's type checks).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connection

from journeys import canvas_fields
from journeys.definition import EXITS, definition_of, normalized, validate
from journeys.diagram import KIND_SHORT, duration, summarize
from journeys.models import Journey, JourneyVersion, StepKind
from journeys.problems import Problem
from journeys.services import pending_draft_stale
from journeys.test_send import sample_context
from journeys.triggers import registry
from orchestrator.audience.models import Customer
from orchestrator.consent.models import CHANNELS, Topic
from orchestrator.delivery.models import MessageTemplate, TemplateVariant
from orchestrator.delivery.rendering import (
    TemplateProblem,
    build_context,
    render_check,
    render_message,
)
from orchestrator.delivery.routing import pick_locale
from orchestrator.segments import conditions
from orchestrator.segments.models import Segment

#: Most event names and attribute names offered (they are suggestions, not limits).
MAX_NAMES = 200
#: Customers read to learn which attributes exist and their types.
ATTRIBUTE_SAMPLE = 1000

_STEP_FIELD = re.compile(r"^steps\.([^.\[]+)")
_STEP_INDEX = re.compile(r"^steps\[(\d+)\]")


# --- problems ---------------------------------------------------------------------------


def step_of(field: str, definition: Any) -> str | None:
    """The step key a problem's field is about (``steps.remind.conditions[0]`` ->
    ``remind``); ``steps[2]`` names the third step when it has a usable key."""
    if m := _STEP_FIELD.match(field or ""):
        return m.group(1)
    if m := _STEP_INDEX.match(field or ""):
        steps = definition.get("steps") if isinstance(definition, Mapping) else None
        i = int(m.group(1))
        if isinstance(steps, list) and i < len(steps) and isinstance(steps[i], Mapping):
            key = steps[i].get("key")
            return key if isinstance(key, str) and key else None
    return None


def problems_json(problems: Sequence[Problem], definition: Any) -> list[dict[str, Any]]:
    return [
        {"field": p.field, "step": step_of(p.field, definition), "message": p.message}
        for p in problems
    ]


_CONFIG_FIELD = re.compile(r"^steps\.([^.\[]+)\.config\.(\w+)")


def type_problem(field: str, message: str, definition: Any) -> Problem:
    """A wrong JSON type (the API's type checks) said with the setting's own label:
    ``steps.hello.config.template`` + "Must be a string." -> "Template: must be a string."."""
    label = (field.rsplit(".", 1)[-1] or "definition").replace("_", " ").capitalize()
    if m := _CONFIG_FIELD.match(field):
        steps = definition.get("steps") if isinstance(definition, Mapping) else None
        kinds = {s.get("key"): s.get("kind") for s in steps or [] if isinstance(s, Mapping)}
        with contextlib.suppress(KeyError, TypeError):
            label = canvas_fields.spec(kinds.get(m.group(1)), m.group(2))["label"]
    text = message[:1].lower() + message[1:] if message else "has the wrong kind of value."
    return Problem(field, f"{label}: {text}")


def check(definition: Any) -> list[Problem]:
    """``validate``, with a definition whose values have the wrong JSON types answered
    as a problem rather than an error (the API's serializers catch those first)."""
    try:
        return validate(definition)
    except (TypeError, AttributeError, ValueError, KeyError):
        return [Problem("", "Some settings have the wrong kind of value; check each step.")]


# --- the catalog --------------------------------------------------------------------------


def event_names(limit: int = MAX_NAMES) -> list[str]:
    """Distinct event names, read by skipping along the (name, time) index: one probe
    per name, however many events there are."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH RECURSIVE names(name) AS (
                (SELECT name FROM audience_event ORDER BY name LIMIT 1)
                UNION ALL
                SELECT (SELECT e.name FROM audience_event e WHERE e.name > n.name
                        ORDER BY e.name LIMIT 1)
                FROM names n WHERE n.name IS NOT NULL
            )
            SELECT name FROM names WHERE name IS NOT NULL LIMIT %s
            """,
            [limit],
        )
        return [row[0] for row in cursor.fetchall()]


def attribute_names(sample: int = ATTRIBUTE_SAMPLE) -> list[dict[str, str]]:
    """Attribute names of the latest customers, each with its JSON type."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT a.key, mode() WITHIN GROUP (ORDER BY jsonb_typeof(a.value))
            FROM (SELECT attributes FROM audience_customer ORDER BY id DESC LIMIT %s) c
            CROSS JOIN LATERAL jsonb_each(
                CASE WHEN jsonb_typeof(c.attributes) = 'object' THEN c.attributes
                     ELSE '{}'::jsonb END) AS a
            GROUP BY a.key ORDER BY a.key LIMIT %s
            """,
            [sample, MAX_NAMES],
        )
        return [{"name": name, "type": kind} for name, kind in cursor.fetchall()]


def _templates() -> list[dict[str, Any]]:
    variants: dict[int, list[tuple[str, str]]] = {}
    for template_id, channel, locale in TemplateVariant.objects.values_list(
        "template_id", "channel", "locale"
    ):
        variants.setdefault(template_id, []).append((channel, locale))
    return [
        {
            "key": key,
            "name": name,
            "channels": sorted({c for c, _l in variants.get(pk, [])}),
            "locales": sorted({loc for _c, loc in variants.get(pk, [])}),
        }
        for pk, key, name in MessageTemplate.objects.order_by("key").values_list(
            "pk", "key", "name"
        )
    ]


OPERATOR_TYPES = {"value": conditions.VALUE_OPS, **conditions.OPS_BY_TYPE}


def catalog() -> dict[str, Any]:
    return {
        "step_kinds": canvas_fields.step_kinds(),
        "templates": _templates(),
        "topics": [
            {"key": key, "name": name, "channels": list(channels)}
            for key, name, channels in Topic.objects.order_by("key").values_list(
                "key", "name", "channels"
            )
        ],
        "segments": [
            {"key": key, "name": name}
            for key, name in Segment.objects.order_by("key").values_list("key", "name")
        ],
        "events": event_names(),
        "attributes": attribute_names(),
        "channels": [*CHANNELS, "preferred"],
        "condition_fields": canvas_fields.condition_fields(),
        "operators": {
            kind: [{"op": op, "label": conditions.OP_LABELS[op]} for op in ops]
            for kind, ops in OPERATOR_TYPES.items()
        },
        "trigger_kinds": canvas_fields.trigger_kinds(),
    }


# --- the state ------------------------------------------------------------------------------


def pending(journey: Journey) -> dict[str, Any]:
    """The canvas's draft: the pending draft when there is one, else what runs."""
    if journey.draft_definition is not None:
        return journey.draft_definition
    return definition_of(journey)


def has_unpublished_changes(journey: Journey, draft: Mapping[str, Any] | None = None) -> bool:
    version = journey.current_version
    if version is None:
        return True
    draft = draft if draft is not None else pending(journey)
    try:
        return normalized(draft) != version.definition
    except (KeyError, AttributeError, TypeError):  # a draft too broken to compare
        return True


def journey_json(journey: Journey) -> dict[str, Any]:
    version = journey.current_version
    saved_by = journey.draft_saved_by if journey.draft_saved_by_id else None
    return {
        "pk": journey.pk,
        "key": journey.key,
        "name": journey.name,
        "status": journey.status,
        "published_version": version.number if version else None,
        "has_unpublished_changes": has_unpublished_changes(journey),
        "draft_pending": journey.draft_definition is not None,
        "draft_saved_at": journey.draft_saved_at.isoformat() if journey.draft_saved_at else None,
        "draft_saved_by": (saved_by.get_full_name() or saved_by.get_username())
        if saved_by
        else None,
        "stale": pending_draft_stale(journey),
    }


def state(journey: Journey, urls: Mapping[str, str]) -> dict[str, Any]:
    draft = pending(journey)
    version = journey.current_version
    return {
        "journey": journey_json(journey),
        "draft": draft,
        "published": version.definition if version else None,
        "problems": problems_json(check(draft), draft),
        "catalog": catalog(),
        "urls": dict(urls),
    }


# --- changes in words -------------------------------------------------------------------------


def _kind_name(kind: Any) -> str:
    return str(KIND_SHORT.get(kind, kind))


def _trigger_text(trigger: Mapping[str, Any]) -> str:
    kind = registry.get(trigger.get("kind"))
    return kind.LABEL.lower() if kind else str(trigger.get("kind"))


def _step_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    if old.get("kind") != new.get("kind"):
        return [
            f"Changed from a {_kind_name(old.get('kind'))} step to a "
            f"{_kind_name(new.get('kind'))} step: {summarize(new)}"
        ]
    out = []
    before, after = old.get("config") or {}, new.get("config") or {}
    kind = new.get("kind")
    if before != after:
        if (
            kind == StepKind.WAIT
            and before.get("mode", "duration") == after.get("mode", "duration") == "duration"
        ):
            out.append(
                f"Wait changed from {duration(before.get('minutes'))} "
                f"to {duration(after.get('minutes'))}"
            )
        elif summarize(old) != summarize(new):
            out.append(
                f"{_kind_name(kind).capitalize()} changed from “{summarize(old)}” "
                f"to “{summarize(new)}”"
            )
        else:
            names = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
            out.append(f"Settings changed: {', '.join(n.replace('_', ' ') for n in names)}")
    words = EXITS.get(kind, ("then",))
    for attr, word in zip(("next", "alt_next"), words, strict=False):
        if (old.get(attr) or "") != (new.get(attr) or ""):
            was = old.get(attr) or "the end"
            now = new.get(attr) or "the end"
            prefix = f"{word.capitalize()}: " if kind in EXITS else "Then "
            out.append(f"{prefix}goes to {now} (was {was})")
    if (old.get("label") or "") != (new.get("label") or ""):
        out.append(f"Renamed from “{old.get('label') or old.get('key')}” to “{new.get('label')}”")
    return out


def _journey_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []

    def add(where: str, summary: str) -> None:
        out.append({"where": where, "step": None, "change": "changed", "summary": summary})

    ot, nt = old.get("trigger") or {}, new.get("trigger") or {}
    if ot.get("kind") != nt.get("kind"):
        add("trigger", f"Starts when {_trigger_text(nt)} (was: {_trigger_text(ot)})")
    elif ot != nt:
        names = sorted(k for k in {*ot, *nt} if ot.get(k) != nt.get(k))
        parts = []
        for name in names:
            a, b = ot.get(name), nt.get(name)
            if isinstance(a, str | int | float | type(None)) and isinstance(
                b, str | int | float | type(None)
            ):
                parts.append(f"{name.replace('_', ' ')} from {a or '(none)'} to {b or '(none)'}")
            else:
                parts.append(f"{name.replace('_', ' ')} changed")
        add("trigger", "Trigger: " + "; ".join(parts))
    og, ng = old.get("goal"), new.get("goal")
    if og != ng:
        if not ng:
            add("goal", f"The goal {og['event']} was removed")
        elif not og:
            add("goal", f"Goal added: {ng['event']}")
        else:
            within = ng.get("within_hours")
            span = f" within {duration(within * 60)}" if within else ""
            add("goal", f"Goal is now {ng['event']}{span}")
    if (old.get("exit_events") or []) != (new.get("exit_events") or []):
        names = ", ".join(e.get("event", "?") for e in new.get("exit_events") or []) or "none"
        add("exit_events", f"Customers now leave on: {names}")
    if old.get("entry") != new.get("entry"):
        rule = (new.get("entry") or {}).get("rule", "every_time").replace("_", " ")
        add("entry", f"Who may enter again changed to: {rule}")
    simple = {
        "name": "Name",
        "description": "Description",
        "topic": "Topic",
        "priority": "Priority",
        "on_hold": "When a message is held",
        "customer_name": "Name customers read",
        "customer_names": "Names customers read",
    }
    for field, word in simple.items():
        if old.get(field) != new.get(field):
            value = new.get(field)
            shown = value if isinstance(value, str | int) and field != "description" else None
            add(field, f"{word} changed" + (f" to {shown}" if shown not in (None, "") else ""))
    return out


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The changes from ``old`` (a published definition; None: nothing published) to
    ``new``, each ``{where, step, change, summary}`` in a marketer's words."""
    new_steps = [s for s in new.get("steps") or [] if isinstance(s, Mapping)]
    if old is None:
        return [
            {
                "where": f"steps.{s.get('key')}",
                "step": s.get("key"),
                "change": "added",
                "summary": f"Added {_kind_name(s.get('kind'))} step {s.get('key')}: {summarize(s)}",
            }
            for s in new_steps
        ]
    out = _journey_changes(old, new)
    old_by_key = {s["key"]: s for s in old.get("steps") or []}
    new_by_key = {s.get("key"): s for s in new_steps}
    if (
        old_by_key
        and new_steps
        and new_steps[0].get("key") != (old.get("steps") or [{}])[0].get("key")
    ):
        out.append(
            {
                "where": "steps",
                "step": None,
                "change": "changed",
                "summary": f"Customers now enter at {new_steps[0].get('key')} "
                f"(was {old['steps'][0]['key']})",
            }
        )
    for s in new_steps:
        key = s.get("key")
        entry = {"where": f"steps.{key}", "step": key}
        if key not in old_by_key:
            out.append(
                {
                    **entry,
                    "change": "added",
                    "summary": f"Added {_kind_name(s.get('kind'))} step {key}: {summarize(s)}",
                }
            )
            continue
        said = _step_changes(old_by_key[key], s)
        if said:
            out.append({**entry, "change": "changed", "summary": "; ".join(said)})
    for key, s in old_by_key.items():
        if key not in new_by_key:
            out.append(
                {
                    "where": f"steps.{key}",
                    "step": key,
                    "change": "removed",
                    "summary": f"Removed {_kind_name(s.get('kind'))} step {key}",
                }
            )
    return out


def draft_changes(journey: Journey) -> dict[str, Any]:
    version = journey.current_version
    draft = pending(journey)
    with contextlib.suppress(KeyError, AttributeError, TypeError):  # else compared as it is
        draft = normalized(draft)
    return {
        "published_version": version.number if version else None,
        "changes": changes(version.definition if version else None, draft),
    }


# --- versions -------------------------------------------------------------------------------


def publisher(version: JourneyVersion) -> str:
    user = version.published_by
    if user is not None:
        return user.get_full_name() or user.get_username()
    return version.published_via or "system"


def version_summary(changed: list[dict[str, Any]], first: bool) -> str:
    if first:
        return "First version"
    steps = sum(1 for c in changed if c["step"])
    others = [c["where"].replace("_", " ") for c in changed if not c["step"]]
    parts = []
    if steps:
        parts.append(f"{steps} step{'' if steps == 1 else 's'} changed")
    if others:
        parts.append(f"{', '.join(dict.fromkeys(others))} changed")
    return "; ".join(parts) or "No changes"


def versions(journey: Journey) -> list[dict[str, Any]]:
    """The published versions, newest first, each with who published it and a summary
    of what changed from the one before."""
    rows = list(
        JourneyVersion.objects.filter(journey=journey)
        .select_related("published_by")
        .order_by("number")
    )
    out = []
    previous = None
    for version in rows:
        changed = changes(previous.definition, version.definition) if previous else []
        out.append(
            {
                "number": version.number,
                "published_at": version.created_at.isoformat(),
                "published_by": publisher(version),
                "steps": len(version.definition.get("steps") or []),
                "summary": version_summary(changed, previous is None),
                "current": version.pk == journey.current_version_id,
            }
        )
        previous = version
    return out[::-1]


# --- live counts -------------------------------------------------------------------------------

#: Step-log outcomes that continue a visit already counted (as the analytics rollup).
_NOT_AN_ENTRY = ("event", "timeout", "converted", "exited")

COUNTS_SQL = f"""
    WITH runs AS MATERIALIZED (
        SELECT r.id, r.enrollment_id, r.step, r.message_id, r.at,
               e.converted_at IS NOT NULL AS converted,
               lag(r.step) OVER (PARTITION BY r.enrollment_id ORDER BY r.at, r.id) AS came_from
        FROM journeys_steprun r
        JOIN journeys_enrollment e ON e.id = r.enrollment_id
        WHERE r.journey_id = %(journey)s
          AND (%(version)s::bigint IS NULL OR e.version_id = %(version)s::bigint)
          AND r.outcome NOT IN {_NOT_AN_ENTRY!r}
    )
    SELECT 'step', r.step, '', count(*), count(m.sent_at),
           count(DISTINCT r.enrollment_id) FILTER (WHERE r.converted)
    FROM runs r LEFT JOIN delivery_message m ON m.id = r.message_id
    GROUP BY r.step
    UNION ALL
    SELECT 'edge', came_from, step, count(*), 0, 0 FROM runs
    WHERE came_from IS NOT NULL GROUP BY came_from, step
    UNION ALL
    SELECT 'waiting', e.step, '', count(*), 0, 0 FROM journeys_enrollment e
    WHERE e.journey_id = %(journey)s AND e.status = 'active'
      AND (%(version)s::bigint IS NULL OR e.version_id = %(version)s::bigint)
    GROUP BY e.step
"""  # noqa: S608 - built only from this module's constants


def counts(journey: Journey, *, of: str = "published") -> dict[str, Any]:
    """Per step (entered, waiting there now, sent, converted after passing it) and per
    edge (how many went from one step to the next), in one query over the step log.

    ``of="published"``: the current version's enrollments; ``"draft"``: every
    enrollment of the journey, by step key (the draft's steps keep their keys).
    """
    definition = (
        journey.current_version.definition
        if of == "published" and journey.current_version_id
        else pending(journey)
    )
    version = journey.current_version_id if of == "published" else None
    if of == "published" and version is None:
        rows = []
    else:
        with connection.cursor() as cursor:
            cursor.execute(COUNTS_SQL, {"journey": journey.pk, "version": version})
            rows = cursor.fetchall()
    zero = {"entered": 0, "waiting": 0, "sent": 0, "converted": 0}
    steps = {
        s["key"]: dict(zero)
        for s in definition.get("steps") or []
        if isinstance(s, Mapping) and isinstance(s.get("key"), str)
    }
    edges: dict[str, int] = {}
    for what, step, target, n, sent, converted in rows:
        if what == "edge":
            edges[f"{step}->{target}"] = n
            continue
        figures = steps.setdefault(step, dict(zero))
        if what == "step":
            figures.update(entered=n, sent=sent, converted=converted)
        else:
            figures["waiting"] = n
    return {"of": of, "steps": steps, "edges": edges}


# --- preview ---------------------------------------------------------------------------------

#: The customer a preview uses when there is none to show.
SAMPLE_CUSTOMER = {
    "external_id": "sample-customer",
    "email": "sample@example.com",
    "phone": "+15555550100",
    "timezone": "UTC",
    "attributes": {"first_name": "Alex", "last_name": "Sample"},
}


class PreviewRefused(ValueError):
    """The template cannot be shown for this channel, locale or customer (in words)."""


def _sample_customer(customer_id: str | None, locale: str) -> tuple[Customer, bool]:
    """(customer, is_real): the given one, else the first with the locale, else a sample."""
    if customer_id:
        found = Customer.objects.filter(external_id=customer_id).first()
        if found is None and str(customer_id).isdigit():
            found = Customer.objects.filter(pk=int(customer_id)).first()
        if found is None:
            raise PreviewRefused(f"There is no customer {customer_id!r}.")
        return found, True
    found = Customer.objects.filter(locale=locale).order_by("id").first() if locale else None
    if found is not None:
        return found, True
    # Never saved: a stand-in with a primary key nobody has, for the preference link.
    return Customer(pk=0, locale=locale or "en", **SAMPLE_CUSTOMER), False


def _filled(context: dict[str, Any], path: str) -> dict[str, Any]:
    """``context`` with the missing variable ``path`` (``data.item``) shown as
    ``[data.item]``, so a preview still reads where the journey fills it in."""
    names = path.split(".")
    root = dict(context)
    node = root
    for name in names[:-1]:
        child = node.get(name)
        node[name] = child = dict(child) if isinstance(child, dict) else {}
        node = child
    node[names[-1]] = f"[{path}]"
    return root


def preview(
    *,
    journey: Journey,
    template: str,
    channel: str,
    locale: str = "",
    customer: str | None = None,
    step: str | None = None,
) -> dict[str, Any]:
    """The template rendered as the dispatcher would for a sample customer, with what an
    enrollment of theirs would carry (their latest trigger event, the step's data).
    Variables nobody has yet show as ``[data.item]`` and are listed in ``missing``."""
    found = MessageTemplate.objects.filter(key=template).first()
    if found is None:
        raise PreviewRefused(f"There is no message template {template!r}.")
    variants = {(v.channel, v.locale): v for v in found.variants.all()}
    channels = sorted({c for c, _l in variants})
    if not channels:
        raise PreviewRefused(f"Template {template!r} has no message written yet.")
    if channel in ("", "preferred"):
        channel = channels[0]
    if channel not in channels:
        raise PreviewRefused(
            f"Template {template!r} has no {channel} version; it has {', '.join(channels)}."
        )
    person, real = _sample_customer(customer, locale)
    chosen = pick_locale(locale or person.locale, [loc for c, loc in variants if c == channel])
    variant = variants[(channel, chosen)]
    step_data = next(
        (
            s["config"]["data"]
            for s in pending(journey).get("steps") or []
            if isinstance(s, Mapping)
            and s.get("key") == step
            and isinstance(s.get("config"), Mapping)
            and isinstance(s["config"].get("data"), dict)
        ),
        None,
    )
    data = {
        **(sample_context(journey, person) if real else {}),
        **(step_data or {}),
        "journey": journey.key,
    }
    context = build_context(customer=person, message_data=data)
    fields = {
        "channel": channel,
        "subject": variant.subject,
        "body": variant.body,
        "html": variant.html,
        "options": variant.provider_options,
    }
    check = render_check(**fields, context=context)
    for path in check.missing:
        context = _filled(context, path)
    try:
        rendered, options = render_message(**fields, context=context)
    except TemplateProblem as exc:
        raise PreviewRefused(f"The {channel} message cannot be shown: {exc}") from None
    out: dict[str, Any] = {
        "customer": {
            "external_id": person.external_id,
            "locale": person.locale,
            "sample": not real,
        },
        "channel": channel,
        "locale": chosen,
        "subject": rendered.subject,
        "body": rendered.body,
        "missing": list(check.missing),
    }
    if rendered.html:
        out["html"] = rendered.html
    if options:
        out["options"] = options
    return out
