"""Liquid rendering of marketer-authored templates: sandboxed, bounded, never silently blank.

Liquid cannot reach Python objects or the filesystem; on top of that we bound
loops, output size and nesting, treat an undefined variable as an error (the
``default`` filter still works), and refuse an empty rendered body.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from io import StringIO
from typing import Any

from liquid import BoundTemplate, Environment, StrictDefaultUndefined
from liquid.exceptions import (
    LiquidError,
    OutputStreamLimitError,
    TemplateNotFoundError,
    UndefinedError,
)
from liquid.output import LimitedStringIO

from orchestrator.consent.message_links import LINK_VARIABLES, preference_link


class _OutputLimit(LimitedStringIO):
    """Liquid's bounded output stream, counted as it counts (UTF-8 bytes), without
    encoding the ASCII pieces - most of them - to count them."""

    def write(self, text: str, /) -> int:
        if text:
            self.size += len(text) if text.isascii() else len(text.encode("utf-8"))
            if self.size > self.limit:
                raise OutputStreamLimitError("output stream limit reached", token=None)
        return StringIO.write(self, text)


class _BoundedTemplate(BoundTemplate):
    def _get_buffer(self) -> StringIO:
        return _OutputLimit(limit=self.env.output_stream_limit)

    def render(self, *args: Any, **kwargs: Any) -> str:
        """As Liquid renders, with the arguments as the globals themselves when the
        template has no globals or front matter of its own to chain them with: one
        mapping less for every variable lookup of every message."""
        render_args = dict(*args, **kwargs)
        context = self.context_class(
            self,
            globals=self.make_globals(render_args) if self.matter or self.globals else render_args,
        )
        buffer = self._get_buffer()
        self.render_with_context(context, buffer)
        return buffer.getvalue()


class _BoundedEnvironment(Environment):
    template_class = _BoundedTemplate
    loop_iteration_limit = 10_000
    output_stream_limit = 200_000  # characters
    local_namespace_limit = 20_000
    context_depth_limit = 20


ENV = _BoundedEnvironment(undefined=StrictDefaultUndefined, autoescape=False)
HTML_ENV = _BoundedEnvironment(undefined=StrictDefaultUndefined, autoescape=True)

_WS = re.compile(r"\s+")


class TemplateProblem(ValueError):
    """A template that does not parse or does not render, with its line when known."""

    def __init__(
        self,
        message: str,
        *,
        field: str = "body",
        line: int | None = None,
        undefined: str | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.line = line
        #: The variable's path (``data.order_id``) when the problem is an undefined one.
        self.undefined = undefined

    def __str__(self) -> str:
        where = f"{self.field}, line {self.line}" if self.line else self.field
        return f"{where}: {self.args[0]}"


def _line_of(exc: LiquidError) -> int | None:
    token = getattr(exc, "token", None)
    if token is None:
        return None
    source = getattr(token, "source", "") or ""
    start = getattr(token, "start_index", None)
    # Liquid reports errors at the end of the input (an empty {{ }}, an unclosed tag)
    # with start_index -1: better no line than a wrong one.
    if start is None or start < 0 or not source:
        return None
    return source.count("\n", 0, start) + 1


def _first_line(exc: Exception) -> str:
    message = str(exc).splitlines()[0].strip() if str(exc) else ""
    if isinstance(exc, TemplateNotFoundError):
        return f"include and render of other templates are not allowed ({message})"
    return message or type(exc).__name__


@lru_cache(maxsize=2048)
def _parse(source: str, html: bool):
    return (HTML_ENV if html else ENV).from_string(source)


@lru_cache(maxsize=2048)
def variables_used(source: str, html: bool = False) -> frozenset[str]:
    """The top-level variables ``source`` reads, found by Liquid's static analysis (so
    a name in a comment or a raw block does not count); empty if it does not parse."""
    if not source:
        return frozenset()
    try:
        return frozenset(_parse(source, html).global_variables())
    except LiquidError:
        return frozenset()


def check_syntax(source: str, *, field: str = "body", html: bool = False) -> None:
    """Raise TemplateProblem naming the line if ``source`` is not valid Liquid."""
    try:
        _parse(source, html)
    except LiquidError as exc:
        raise TemplateProblem(_first_line(exc), field=field, line=_line_of(exc)) from None


def render_string(source: str, context: dict[str, Any], *, field: str, html: bool = False) -> str:
    if not source:
        return ""
    try:
        return _parse(source, html).render(**context)
    except UndefinedError as exc:
        message = _first_line(exc)
        raise TemplateProblem(
            message, field=field, line=_line_of(exc), undefined=_undefined_path(message)
        ) from None
    except LiquidError as exc:
        raise TemplateProblem(_first_line(exc), field=field, line=_line_of(exc)) from None
    except (RecursionError, MemoryError) as exc:
        raise TemplateProblem(f"template too complex: {type(exc).__name__}", field=field) from None


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str
    html: str

    def as_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "body": self.body, "html": self.html}


def render_variant(
    *, subject: str, body: str, html: str, channel: str, context: dict[str, Any]
) -> Rendered:
    """Render one variant; raise TemplateProblem for errors and for an empty result."""
    rendered_subject = _WS.sub(" ", render_string(subject, context, field="subject")).strip()
    rendered_body = render_string(body, context, field="body").strip()
    rendered_html = render_string(html, context, field="html", html=True).strip()
    if not rendered_body and not rendered_html:
        raise TemplateProblem("rendered to an empty message; refusing to send a blank")
    if channel == "email" and not rendered_subject:
        raise TemplateProblem("email subject rendered empty", field="subject")
    return Rendered(rendered_subject, rendered_body, rendered_html)


def render_message(
    *,
    channel: str,
    subject: str,
    body: str,
    html: str,
    options: Any,
    context: dict[str, Any],
) -> tuple[Rendered, Any]:
    """What the dispatcher renders of a variant for ``channel``: the subject and the HTML
    for email only, the body, and the provider options of a WhatsApp or LINE variant."""
    rendered = render_variant(
        subject=subject if channel == "email" else "",
        body=body,
        html=html if channel == "email" else "",
        channel=channel,
        context=context,
    )
    rendered_options = None
    if channel == "whatsapp" or (channel == "line" and (options or {}).get("kind")):
        rendered_options = render_options(options or {}, context)
    return rendered, rendered_options


#: Enough to name every variable a real template lacks; the check stops after this many.
_MAX_MISSING = 50
# Liquid's messages: "'name' is undefined" for a top-level name, "data.a['b c'] is
# undefined" for a path (segments as Python reprs; list indexes are left out).
_UNDEFINED = re.compile(r"^(?:'(?P<root>[^']+)'|(?P<path>\S.*?)) is undefined$")
_SEGMENT = re.compile(
    r"""\.?(?:\['(?P<single>[^']*)'\]|\["(?P<double>[^"]*)"\]|(?P<name>[^.\[\]'"]+))"""
)


def _undefined_path(message: str) -> str | None:
    found = _UNDEFINED.match(message)
    if found is None:
        return None
    return found["root"] or found["path"]


class _Placeholder(str):
    """Stands in for a missing variable while the check looks for further ones; becomes
    an object if the template reads a property of it (``data.shop`` of ``data.shop.name``)."""

    __slots__ = ()


def _with_placeholder(context: dict[str, Any], path: str) -> dict[str, Any] | None:
    """A copy of ``context`` with ``path`` defined as "", or None if it cannot be placed
    (a segment that is not an object key, a parent that is not an object)."""
    segments = [
        next(s for s in (m["single"], m["double"], m["name"]) if s is not None)
        for m in _SEGMENT.finditer(path)
    ]
    if not segments:
        return None
    root = dict(context)
    node = root
    for segment in segments[:-1]:
        child = node.get(segment)
        if child is None or isinstance(child, _Placeholder):
            child = {}
        elif not isinstance(child, dict):
            return None
        node[segment] = child = dict(child)
        node = child
    if segments[-1] in node:
        return None
    node[segments[-1]] = _Placeholder()
    return root


@dataclass(frozen=True)
class RenderCheck:
    """Whether a variant renders with a context: the variables it lacks (paths as the
    template writes them), or another problem (an empty result, a failing filter)."""

    missing: tuple[str, ...] = ()
    problem: TemplateProblem | None = None

    @property
    def ok(self) -> bool:
        return not self.missing and self.problem is None


def render_check(
    *,
    channel: str,
    subject: str,
    body: str,
    html: str,
    options: Any,
    context: dict[str, Any],
) -> RenderCheck:
    """Render as the dispatcher would (``render_message``); name every undefined variable.

    Liquid stops at the first undefined variable, so each one found is given a
    placeholder and the variant is rendered again, until it renders or fails otherwise.
    """
    missing: list[str] = []
    while True:
        try:
            render_message(
                channel=channel,
                subject=subject,
                body=body,
                html=html,
                options=options,
                context=context,
            )
        except TemplateProblem as exc:
            if exc.undefined is None:
                return RenderCheck(tuple(missing), None if missing else exc)
            # "data.shop" found first, then "data.shop.name": the deeper path is the one.
            missing = [m for m in missing if not exc.undefined.startswith(f"{m}.")]
            missing.append(exc.undefined)
            placed = _with_placeholder(context, exc.undefined)
            if placed is None or len(missing) >= _MAX_MISSING:
                return RenderCheck(tuple(missing))
            context = placed
        else:
            return RenderCheck(tuple(missing))


def render_options(options: Any, context: dict[str, Any], *, depth: int = 0) -> Any:
    """Render every string inside a variant's provider options (nested dicts and lists)."""
    if depth > 10:
        raise TemplateProblem("provider options are nested too deeply", field="provider_options")
    if isinstance(options, str):
        return render_string(options, context, field="provider_options")
    if isinstance(options, dict):
        return {k: render_options(v, context, depth=depth + 1) for k, v in options.items()}
    if isinstance(options, list):
        return [render_options(v, context, depth=depth + 1) for v in options]
    return options


def option_strings(options: Any) -> Iterator[str]:
    """Every string inside a variant's provider options (nested dicts and lists)."""
    if isinstance(options, str):
        yield options
    elif isinstance(options, dict):
        for item in options.values():
            yield from option_strings(item)
    elif isinstance(options, list):
        for item in options:
            yield from option_strings(item)


def link_variables_read(subject: str, body: str, html: str, options: Any) -> frozenset[str]:
    """Which of the link variables (``preferences_url``, ``unsubscribe_url``) a variant
    reads in any of its texts and provider options. Each link is signed (an HMAC), so
    the dispatcher and the send checks make only these."""
    used = variables_used(subject) | variables_used(body) | variables_used(html, True)
    for text in option_strings(options):
        used |= variables_used(text)
    return used & LINK_VARIABLES


def customer_context(customer) -> dict[str, Any]:
    attributes = customer.attributes or {}
    return {
        **{k: v for k, v in attributes.items() if isinstance(k, str)},
        "external_id": customer.external_id,
        "email": customer.email,
        "phone": customer.phone,
        "locale": customer.locale,
        "timezone": customer.timezone,
        "attributes": attributes,
    }


def preview_links(customer, *, channel: str = "email") -> dict[str, str]:
    """``preferences_url`` and ``unsubscribe_url`` outside a real message (previews,
    checks): both open the customer's preference center, as there is no message to
    tie a one-click link to."""
    url = preference_link(customer_id=customer.pk, channel=channel)
    return {"preferences_url": url, "unsubscribe_url": url}


def build_context(
    *,
    customer,
    message_data: dict[str, Any],
    extra: dict[str, Any] | None = None,
    customer_vars: dict[str, Any] | None = None,
    brand: dict[str, Any] | None = None,
    links: dict[str, str] | None = None,
):
    """The variables every template sees: customer, data (request/trigger), event, brand,
    and the links ``preferences_url`` and ``unsubscribe_url``.

    ``customer_vars`` and ``brand`` may be passed in already built, so a batch builds
    them once per customer rather than once per message. ``links`` are signed per
    message, so the dispatcher passes only those the template reads; left out, they
    are made by ``preview_links``.
    """
    data = message_data or {}
    if brand is None:
        from django.conf import settings

        brand = {"name": settings.BRAND_NAME}
    context = {
        "customer": customer_vars if customer_vars is not None else customer_context(customer),
        "data": data,
        "event": data.get("event", {}) if isinstance(data.get("event"), dict) else {},
        "brand": brand,
        **(links if links is not None else preview_links(customer)),
    }
    digest = data.get("digest")
    if isinstance(digest, dict):
        # A digest message lists what it folded: its template reads ``items`` and ``count``.
        context["items"] = digest.get("items") or []
        context["count"] = digest.get("count", len(context["items"]))
    if extra:
        context.update(extra)
    return context
