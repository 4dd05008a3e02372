"""The preference center: the customer's own page, reached by a signed link in every message.

No login: the token in the URL names the customer (``orchestrator.consent.tokens``).
A tampered, expired or foreign token, and a customer erased since, all get the same
400 page, so the response never tells which. Every request first passes a per-IP
rate limit, and every response carries the security headers of ``_secured`` -
the page holds personal data and a link that acts for the customer.

Views only validate and call one service: ``orchestrator.consent.preferences``
writes the changes and their ledger rows, the same service the API calls.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import secrets
from collections.abc import Callable
from zoneinfo import ZoneInfo

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods

from journeys.selectors import series_names
from orchestrator.audience.models import Customer
from orchestrator.consent.models import ConsentRecord
from orchestrator.consent.preferences import preferences_update, unsubscribe_from_all
from orchestrator.consent.tokens import preference_customer_id
from orchestrator.delivery.selectors import customer_explanation
from orchestrator.preferences import ratelimit, selectors
from orchestrator.preferences.forms import CHANNEL_LABELS, PreferencesForm, local_today

SOURCE = ConsentRecord.Source.PREFERENCE_CENTER
#: A CSS colour: settings are trusted, but the value lands inside a <style> element.
_COLOUR = re.compile(r"^#[0-9a-fA-F]{3,8}$|^[a-zA-Z]{3,20}$")


def _rate_limited(request: HttpRequest) -> bool:
    """Per client IP, across every web process (``orchestrator.preferences.ratelimit``).

    REMOTE_ADDR, not X-Forwarded-For: a client sets that header to anything it likes.
    """
    return ratelimit.limiter().over_limit(request.META.get("REMOTE_ADDR", ""))


def _secured(response: HttpResponse, nonce: str) -> HttpResponse:
    response["Content-Security-Policy"] = (
        f"default-src 'self'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
        "img-src 'self' data:; form-action 'self'; base-uri 'none'; object-src 'none'; "
        "frame-ancestors 'none'"
    )
    response["X-Frame-Options"] = "DENY"
    # "same-origin", not "no-referrer": with no-referrer browsers send "Origin: null"
    # on the page's own POSTs, which Django's CSRF check rightly refuses. The page
    # links nowhere else, so the token still never leaves the site in a Referer.
    response["Referrer-Policy"] = "same-origin"
    response["Cache-Control"] = "no-store"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _language(request: HttpRequest, customer: Customer | None) -> str:
    """?lang= (the switcher) if offered, else the customer's locale, else the browser's."""
    offered = dict(settings.LANGUAGES)
    asked = request.POST.get("lang") or request.GET.get("lang") or ""
    if asked in offered:
        return asked
    if customer is not None:
        base = re.split(r"[-_]", customer.locale or "")[0].lower()
        if base in offered:
            return base
    return getattr(request, "LANGUAGE_CODE", settings.LANGUAGE_CODE)


def _page(request, template: str, context: dict, *, nonce: str, status: int = 200):
    brand_colour = settings.BRAND_COLOR if _COLOUR.match(settings.BRAND_COLOR) else "#0f766e"
    context = {
        "brand": settings.BRAND_NAME,
        "brand_colour": brand_colour,
        "nonce": nonce,
        "languages": settings.LANGUAGES,
        **context,
    }
    return render(request, template, context, status=status)


def _entry(view: Callable) -> Callable:
    """Rate limit, resolve the token (uniform 400), pick the language, secure the response."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, token: str) -> HttpResponse:
        nonce = secrets.token_urlsafe(16)
        if _rate_limited(request):
            with translation.override(_language(request, None)):
                response = _page(request, "preferences/invalid.html", {"busy": True}, nonce=nonce)
            response.status_code = 429
            response["Retry-After"] = "60"
            return _secured(response, nonce)
        customer_id = preference_customer_id(token)
        customer = Customer.objects.filter(pk=customer_id).first() if customer_id else None
        lang = _language(request, customer)
        with translation.override(lang):
            if customer is None:
                response = _page(request, "preferences/invalid.html", {}, nonce=nonce, status=400)
            else:
                response = view(request, token, customer, lang=lang, nonce=nonce)
        response["Content-Language"] = lang
        return _secured(response, nonce)

    return wrapped


_SOURCES = {
    "preference_center": gettext_lazy("on this page"),
    "one_click": gettext_lazy("with the unsubscribe link in an email"),
    "inbound_keyword": gettext_lazy("by replying to a text message"),
    "api": gettext_lazy("through our website or app"),
    "admin": gettext_lazy("through our customer service"),
    "import": gettext_lazy("when you signed up"),
    "provider": gettext_lazy("through your email or phone provider"),
}


def _record_sentence(record, tz: str) -> str:
    """The consent record behind a message, as a sentence: what, when, where."""
    when = date_format(timezone.localtime(record.created_at, ZoneInfo(tz)), "DATE_FORMAT")
    how = _SOURCES.get(record.source, record.source)
    topic = record.topic.name_in() if record.topic else None
    channel = CHANNEL_LABELS.get(record.channel, record.channel) if record.channel else None
    v = {"when": when, "how": how, "topic": topic, "channel": channel or _("any channel")}
    if record.action == "opt_in" and topic:
        return _("Our record: you said yes to %(topic)s by %(channel)s on %(when)s, %(how)s.") % v
    if record.action == "opt_in":
        return _("Our record: you allowed marketing by %(channel)s on %(when)s, %(how)s.") % v
    if topic:
        return _("Our record: you said no to %(topic)s by %(channel)s on %(when)s, %(how)s.") % v
    return _("Our record: you stopped marketing by %(channel)s on %(when)s, %(how)s.") % v


def _quiet_label(window) -> str:
    return f"{window[0]:%H:%M}-{window[1]:%H:%M}" if window else ""


def _evidence(request: HttpRequest, lang: str) -> dict:
    return {"user_agent": request.headers.get("User-Agent", "")[:200], "language": lang}


def _here(token: str, lang: str, **params: str) -> HttpResponseRedirect:
    # Only ever our own page: nothing from the request chooses where a redirect goes.
    query = "&".join(f"{k}={v}" for k, v in {"lang": lang, **params}.items())
    return HttpResponseRedirect(f"{reverse('preference-center', args=[token])}?{query}")


@require_http_methods(["GET", "POST"])
@_entry
def preference_center(request, token, customer, *, lang, nonce):
    now = timezone.now()
    topics = selectors.marketing_topics()
    channels = selectors.reachable_channels(customer)
    current = selectors.preference_state(customer, now=now, topics=topics)
    today = local_today(customer.timezone, now)
    kwargs = {
        "topics": topics,
        "channels": channels,
        "current": current,
        "today": today,
        "digestible": selectors.digestible_topics(),
    }
    status = 200
    if request.method == "POST" and request.POST.get("action") == "unsubscribe_all":
        preferences_update(
            customer=customer,
            changes=unsubscribe_from_all(),
            source=SOURCE,
            evidence=_evidence(request, lang),
        )
        return _here(token, lang, done="unsubscribed")
    if request.method == "POST":
        form = PreferencesForm(request.POST, **kwargs)
        if form.is_valid():
            preferences_update(
                customer=customer,
                changes=form.changes(),
                source=SOURCE,
                evidence=_evidence(request, lang),
            )
            return _here(token, lang, done="saved")
        status = 400
    else:
        form = PreferencesForm(**kwargs)
    recent = selectors.recent_messages(customer)
    series = series_names(item.message.journey for item in recent)
    explained = [
        {
            "message": item.message,
            "channel": CHANNEL_LABELS.get(item.message.channel, item.message.channel),
            "lines": customer_explanation(
                item.message, journey_name=series.get(item.message.journey)
            ),
            "record": _record_sentence(item.consent_record, customer.timezone or "UTC")
            if item.consent_record
            else "",
        }
        for item in recent
    ]
    context = {
        "customer": customer,
        "form": form,
        "token": token,
        "lang": lang,
        "channels": [(c, CHANNEL_LABELS[c]) for c in channels],
        "opted_out_channels": [c for c in channels if not current.channels_allowed[c]],
        "service_topics": selectors.service_topics(),
        "explained": explained,
        "done": request.GET.get("done", ""),
        "tz": customer.timezone or "UTC",
        # Without quiet hours of their own, the policy applies the site's default.
        "default_quiet": _quiet_label(settings.QUIET_HOURS_DEFAULT),
    }
    return _page(request, "preferences/center.html", context, nonce=nonce, status=status)


@require_http_methods(["POST"])
@_entry
def export(request, token, customer, *, lang, nonce):
    """Download my data: everything we hold about the customer, as a JSON attachment."""
    from orchestrator.privacy.services import customer_export

    body = json.dumps(customer_export(customer=customer), ensure_ascii=False, indent=2, default=str)
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="my-data.json"'
    return response


@require_http_methods(["GET", "POST"])
@_entry
def erase(request, token, customer, *, lang, nonce):
    """Erasure: a GET asks for confirmation; only a POST with ``confirm`` erases."""
    if request.method == "POST" and request.POST.get("confirm") == "erase":
        from orchestrator.privacy.services import customer_erase

        # A second click finds the customer gone: the outcome they asked for already.
        with contextlib.suppress(Customer.DoesNotExist):
            customer_erase(customer=customer, source=SOURCE)
        # Neutral: from here on the link is as invalid as any other, by design.
        return _page(request, "preferences/erased.html", {"lang": lang}, nonce=nonce)
    context = {"token": token, "lang": lang}
    return _page(request, "preferences/erase_confirm.html", context, nonce=nonce)
