"""The links a message carries: ``{{ preferences_url }}`` and ``{{ unsubscribe_url }}``.

``preferences_url`` opens the customer's preference center. Email gets its full
path; SMS, WhatsApp and LINE get the short ``/p/<token>/`` alias, which redirects
there: every character counts in an SMS (160 GSM-7 characters a segment, 153 once
a message is split), and the token is the same one the preference center reads.

``unsubscribe_url`` is the one-click link (RFC 8058) for the message's topic and
channel. Transactional topics cannot be unsubscribed from by one click (a receipt
is not optional), so there it is the preference center link instead: a template
shared by both kinds still renders a working link, never an empty ``href``.

Both are signed per message in the dispatcher, so the dispatcher makes them only
for templates that read them (see ``rendering.variables_used``).
"""

from __future__ import annotations

import functools
import re

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_safe

from orchestrator.consent.tokens import preference_token, preference_url

#: The template variables holding a link back to the customer's choices.
LINK_VARIABLES = frozenset({"preferences_url", "unsubscribe_url"})

# What Django's signing produces (URL-safe base64 and ":"); anything else, e.g. "..",
# is not a token and is not passed on into a Location header.
_TOKEN = re.compile(r"[A-Za-z0-9_:-]{1,300}")


@functools.lru_cache(maxsize=1)
def _short_prefix() -> str:
    # Resolved once: reverse() costs about 100 us, too much to pay per message.
    return reverse("preference-center-short", args=["TOKEN"]).removesuffix("TOKEN/")


def short_preference_url(customer_id: int) -> str:
    """The preference center link for SMS and chat: ``/p/<token>/``, the same token."""
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    return f"{base}{_short_prefix()}{preference_token(customer_id)}/"


def preference_link(*, customer_id: int, channel: str) -> str:
    """``{{ preferences_url }}`` for a message on ``channel``: short everywhere but email."""
    if channel == "email":
        return preference_url(customer_id)
    return short_preference_url(customer_id)


@require_safe
def short_preference_redirect(request: HttpRequest, token: str) -> HttpResponseRedirect:
    """``/p/<token>/`` -> ``/preferences/<token>/``: always that internal path, so the
    alias cannot be made to redirect anywhere else. The preference center checks the
    token's signature; this view only its alphabet."""
    if not _TOKEN.fullmatch(token):
        raise Http404("not a preference link")
    return HttpResponseRedirect(reverse("preference-center", args=[token]))
