"""The dev inbox at /dev/inbox/: what the devinbox adapter "delivered", shown as it would look.

Only there when some channel uses the devinbox adapter (404 otherwise), and,
outside DEBUG, only for staff: it shows message contents. Marketer HTML is shown
in a sandboxed iframe (no scripts, no same-origin) under a strict CSP, never
inlined into our page.
"""

from __future__ import annotations

from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_safe

from channels.adapters import get_adapter
from channels.adapters.sms import segments
from channels.devinbox.adapter import DevInboxAdapter
from channels.devinbox.models import InboxMessage

CHANNEL_LABELS = {"email": "Email", "sms": "SMS", "whatsapp": "WhatsApp", "line": "LINE"}
#: How each channel is drawn: an email, a phone's SMS bubble, or a chat app bubble.
KINDS = {"email": "email", "sms": "sms", "whatsapp": "chat", "line": "chat"}
PAGE_SIZE = 50

# Our own pages: inline styles only, nothing from elsewhere. The srcdoc iframe inherits
# this policy, so marketer HTML cannot run scripts or post forms either; images are
# allowed so emails look as they will.
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https: http:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The raw HTML endpoint: a sandboxed document of its own (unique origin, no scripts).
RAW_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data: https: http:"


def devinbox_enabled() -> bool:
    return any(
        isinstance(get_adapter(alias), DevInboxAdapter) for alias in settings.CHANNEL_ADAPTERS
    )


def _inbox_view(view):
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not devinbox_enabled():
            raise Http404("No channel delivers to the dev inbox.")
        if not settings.DEBUG and not (request.user.is_active and request.user.is_staff):
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        response = view(request, *args, **kwargs)
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers["Cache-Control"] = "no-store"
        return response

    return require_safe(wrapped)


def _admin_message_url(message_ref: str) -> str:
    if not message_ref.isdigit():
        return ""
    try:
        return reverse("admin:delivery_message_change", args=[int(message_ref)])
    except NoReverseMatch:  # the Message admin is not registered in this configuration
        return f"/admin/delivery/message/{int(message_ref)}/change/"


def _sms_info(item: InboxMessage) -> dict:
    info = item.meta.get("sms") if isinstance(item.meta, dict) else None
    return info or segments(item.body).as_dict()


@_inbox_view
def inbox_list(request: HttpRequest) -> HttpResponse:
    channel = request.GET.get("channel", "")
    if channel not in CHANNEL_LABELS:
        channel = ""
    items = InboxMessage.objects.all()
    if channel:
        items = items.filter(channel=channel)
    page = Paginator(items, PAGE_SIZE).get_page(request.GET.get("page"))
    counts = dict(InboxMessage.objects.order_by().values_list("channel").annotate(n=Count("id")))
    tabs = [{"key": "", "label": "All", "count": sum(counts.values())}] + [
        {"key": key, "label": label, "count": counts.get(key, 0)}
        for key, label in CHANNEL_LABELS.items()
    ]
    for item in page.object_list:
        item.channel_label = CHANNEL_LABELS.get(item.channel, item.channel)
        item.headline = item.subject or item.body
    return render(
        request,
        "devinbox/list.html",
        {"page": page, "tabs": tabs, "channel": channel},
    )


@_inbox_view
def inbox_detail(request: HttpRequest, pk: int) -> HttpResponse:
    item = get_object_or_404(InboxMessage, pk=pk)
    context = {
        "item": item,
        "channel_label": CHANNEL_LABELS.get(item.channel, item.channel),
        "sender": item.meta.get("sender", "") if isinstance(item.meta, dict) else "",
        "admin_url": _admin_message_url(item.message_ref),
        "kind": KINDS.get(item.channel, "other"),
    }
    if item.channel == "sms":
        context["sms"] = _sms_info(item)
    return render(request, "devinbox/detail.html", context)


@_inbox_view
def inbox_raw_html(request: HttpRequest, pk: int) -> HttpResponse:
    item = get_object_or_404(InboxMessage, pk=pk)
    if not item.html:
        raise Http404("This message has no HTML part.")
    response = HttpResponse(item.html, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = RAW_CSP
    return response
