"""One-click unsubscribe (RFC 8058): a marketing email's List-Unsubscribe header and
``{{ unsubscribe_url }}`` in a message, served at ``/unsubscribe/<token>/``.

The link carries a signed token naming the customer, topic and channel; nothing
else identifies the person. A POST with ``List-Unsubscribe=One-Click`` (what mail
clients send, without cookies) unsubscribes at once. A GET - a person following
the link, or a link scanner prefetching it - only shows a page with a button, so
a scanner never unsubscribes anyone. A bad or altered token gets the same
neutral 400 page whatever is wrong with it.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from orchestrator.consent.channel_consent import topic_unsubscribe
from orchestrator.consent.models import ConsentRecord, Topic

SALT = "orchestrator.one-click-unsubscribe"


_signer = signing.Signer(salt=SALT)


def make_token(*, customer_id: int, topic_id: int, channel: str, message_id: int) -> str:
    """``customer.topic.channel.message`` and its signature: made for every marketing
    email, so it is a plain signed string (about 10 us), not a signed JSON object."""
    return _signer.sign(f"{customer_id}.{topic_id}.{channel}.{message_id}")


@functools.lru_cache(maxsize=1)
def _path_prefix() -> str:
    # Resolved once: reverse() costs about 100 us, too much to pay per message. New links
    # use /unsubscribe/ (the public contract); /u/ still answers for links already sent.
    return reverse("one-click-unsubscribe", args=["TOKEN"]).removesuffix("TOKEN/")


def unsubscribe_url(*, customer_id: int, topic_id: int, channel: str, message_id: int) -> str:
    token = make_token(
        customer_id=customer_id, topic_id=topic_id, channel=channel, message_id=message_id
    )
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}{_path_prefix()}{token}/"


def one_click_headers(url: str) -> dict[str, str]:
    """The RFC 8058 headers for a link made by ``unsubscribe_url``."""
    return {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def list_unsubscribe_headers(
    *, customer_id: int, topic_id: int, channel: str, message_id: int
) -> dict[str, str]:
    return one_click_headers(
        unsubscribe_url(
            customer_id=customer_id, topic_id=topic_id, channel=channel, message_id=message_id
        )
    )


def _read(token: str) -> dict | None:
    try:
        value = _signer.unsign(token)
    except signing.BadSignature:
        return None
    parts = value.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in (parts[0], parts[1], parts[3])):
        return None
    return {"c": int(parts[0]), "t": int(parts[1]), "ch": parts[2], "m": int(parts[3])}


@csrf_exempt
@require_http_methods(["GET", "POST"])
def one_click(request: HttpRequest, token: str) -> HttpResponse:
    data = _read(token)
    topic = Topic.objects.filter(id=data["t"]).first() if data else None
    if data is None or topic is None:
        return render(request, "consent/unsubscribe.html", {"invalid": True}, status=400)
    context = {"topic": topic, "channel": data.get("ch", "email"), "brand": settings.BRAND_NAME}
    if request.method == "GET":
        return render(request, "consent/unsubscribe.html", context)
    from orchestrator.audience.models import Customer

    if not Customer.objects.filter(id=data["c"]).exists():  # erased since: nothing to do
        return render(request, "consent/unsubscribe.html", context | {"done": True})
    one_click_post = request.POST.get("List-Unsubscribe") == "One-Click"
    topic_unsubscribe(
        customer_id=data["c"],
        topic_id=topic.id,
        channel=context["channel"],
        source=ConsentRecord.Source.ONE_CLICK,
        evidence={
            "message_id": data["m"],
            "how": "mail client one-click" if one_click_post else "unsubscribe page button",
            "user_agent": request.headers.get("User-Agent", "")[:200],
        },
    )
    return render(request, "consent/unsubscribe.html", context | {"done": True})
