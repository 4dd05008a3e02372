"""Click tracking: links in a message point at ``/r/<token>``, which records and redirects.

The dispatcher rewrites every http(s) link of a rendered body (and every ``href`` of
an email's HTML) to ``{PUBLIC_BASE_URL}/r/<token>`` and keeps the original URLs on the
message, in ``Message.rendered["links"]``. The token names only the message and the
link's position in that list, so the redirect target is always read from our own
row, never from the request: the view cannot be made into an open redirect.

The token is ``<message id>.<link index>.<signature>`` with both ints in base 62 and
the HMAC cut to 12 URL-safe base64 characters (72 bits): about 20 characters in all,
because every character of an SMS counts. 72 bits cannot be guessed online, and an
offline attack needs the secret key.

Our own links (preference center, unsubscribe, an already tracked link) are left as
they are: they carry their own signed tokens and a hop through ``/r/`` would only
lengthen them. ``mailto:`` and ``tel:`` links are never matched.
"""

from __future__ import annotations

import datetime as dt
import html as html_lib
import logging
import re
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, HttpResponseRedirect
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.views.decorators.http import require_safe

from orchestrator.delivery.models import Message, MessageEvent, MessageStatus
from orchestrator.delivery.status import sent_statuses_below

logger = logging.getLogger(__name__)

_SALT = "orchestrator.delivery.click"
#: Characters of the HMAC kept in a token (URL-safe base64: 6 bits each, 72 bits).
_SIGNATURE_CHARS = 12
#: The path every tracked link takes; must match the route in ``orchestrator/urls.py``.
CLICK_PATH = "/r/"
#: Paths of links that are ours already and stay as they are.
_OWN_PATHS = ("/preferences/", "/p/", "/unsubscribe/", "/u/", CLICK_PATH)

# Compiled once: the dispatcher runs these over every rendered body.
_TEXT_URL = re.compile(r"""https?://[^\s<>"'`]+""", re.IGNORECASE)
_HREF = re.compile(r"""(\bhref\s*=\s*)(["'])(https?://[^"'\s]+)\2""", re.IGNORECASE)
# Sentence punctuation after a URL in running text is not part of it.
_TRAILING = ".,;:!?*"
# Ten base-62 digits stay within a bigint id.
_TOKEN = re.compile(
    rf"([0-9A-Za-z]{{1,10}})\.([0-9A-Za-z]{{1,4}})\.([A-Za-z0-9_-]{{{_SIGNATURE_CHARS}}})"
)

#: Statuses a click moves forward to ``clicked`` (the status machine's order): not
#: ``sending``, our own final decisions or ``replied``.
_MOVES_TO_CLICKED = sent_statuses_below(MessageStatus.CLICKED)


def _signature(value: str, key: str | bytes | None = None) -> str:
    return signing.Signer(salt=_SALT).signature(value, key)[:_SIGNATURE_CHARS]


def click_token(message_id: int, index: int) -> str:
    """The signed token for link ``index`` of message ``message_id``."""
    value = f"{signing.b62_encode(message_id)}.{signing.b62_encode(index)}"
    return f"{value}.{_signature(value)}"


def click_token_parse(token: str) -> tuple[int, int] | None:
    """(message id, link index) from a token; None if it is malformed or not ours."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    value = f"{match[1]}.{match[2]}"
    signer = signing.Signer(salt=_SALT)
    # The current key, then the fallbacks: links already sent survive a key rotation.
    for key in (signer.key, *signer.fallback_keys):
        if constant_time_compare(match[3], _signature(value, key)):
            return signing.b62_decode(match[1]), signing.b62_decode(match[2])
    return None


@dataclass(frozen=True, slots=True)
class Rewritten:
    body: str
    html: str
    #: The original URLs; a token's index points into this list.
    links: list[str]
    #: The ``/r/`` URLs that replaced them, in the same order.
    tracked: list[str]


class _Rewriter:
    """Replaces links for one message, giving one index (and one token) per distinct URL."""

    __slots__ = ("base", "links", "message_id", "own", "tokens")

    def __init__(self, message_id: int, base: str, own: tuple[str, ...]) -> None:
        self.message_id = message_id
        self.base = base
        self.own = own
        self.links: list[str] = []
        self.tokens: dict[str, str] = {}

    def tracked(self, url: str) -> str | None:
        if url.startswith(self.own):
            return None
        tracked = self.tokens.get(url)
        if tracked is None:
            tracked = f"{self.base}{CLICK_PATH}{click_token(self.message_id, len(self.links))}"
            self.links.append(url)
            self.tokens[url] = tracked
        return tracked

    def text(self, match: re.Match[str]) -> str:
        url = match[0]
        cut = len(url)
        while cut and url[cut - 1] in _TRAILING:
            cut -= 1
        # "(see https://x.example/a)": the parenthesis closes the sentence, not the URL.
        if url[:cut].endswith(")") and "(" not in url[:cut]:
            cut -= 1
        tracked = self.tracked(url[:cut]) if cut else None
        return url if tracked is None else tracked + url[cut:]

    def href(self, match: re.Match[str]) -> str:
        # An href is HTML-escaped ("&amp;"): the URL the browser follows is the unescaped one.
        tracked = self.tracked(html_lib.unescape(match[3]))
        if tracked is None:
            return match[0]
        return f"{match[1]}{match[2]}{tracked}{match[2]}"


def links_rewrite(*, message_id: int, body: str, html: str) -> Rewritten:
    """Point the http(s) links of ``body`` and the hrefs of ``html`` at ``/r/<token>``."""
    # Most bodies have no link: a substring test is far cheaper than the regex.
    if "://" not in body and "://" not in html:
        return Rewritten(body, html, [], [])
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    rewriter = _Rewriter(message_id, base, tuple(base + path for path in _OWN_PATHS))
    if "://" in body:
        body = _TEXT_URL.sub(rewriter.text, body)
    if "://" in html:
        html = _HREF.sub(rewriter.href, html)
    return Rewritten(body, html, rewriter.links, list(rewriter.tokens.values()))


# --- the redirect --------------------------------------------------------------------


def click_record(
    *,
    message_id: int,
    index: int,
    url: str,
    customer: str,
    channel: str,
    journey: str,
    now: dt.datetime,
) -> None:
    """Record a click: a history row, the status moved forward, a customer event.

    Every click is a history row. The customer event is deduplicated per link and
    minute, so a double click (or a mail client's prefetch next to the real click)
    is one ``message.clicked`` for journeys, while a return visit later is another.
    """
    from orchestrator.audience.services import event_record

    with transaction.atomic():
        MessageEvent.objects.create(
            message_id=message_id,
            status=MessageStatus.CLICKED,
            occurred_at=now,
            reason=f"clicked {url}",
            code="click",
        )
        Message.objects.filter(id=message_id, status__in=_MOVES_TO_CLICKED).update(
            status=MessageStatus.CLICKED, updated_at=now
        )
        properties = {"message_id": message_id, "url": url, "channel": channel}
        if journey:
            properties["journey"] = journey
        event_record(
            customer=customer,
            name="message.clicked",
            properties=properties,
            occurred_at=now,
            event_id=f"click:{message_id}:{index}:{now:%Y%m%d%H%M}",
            source="click",
        )


def _not_found() -> HttpResponse:
    return HttpResponseNotFound("Not found.", content_type="text/plain; charset=utf-8")


@require_safe
def click(request: HttpRequest, token: str) -> HttpResponse:
    """``/r/<token>``: record the click and redirect to the link the message carried.

    A token that does not verify, or names no link, is a plain 404: no redirect,
    nothing recorded. HEAD (link scanners, unfurlers) is redirected but not recorded.
    """
    # Some SMS apps and mail clients take the full stop after a link into it; a
    # signature never ends in punctuation.
    parsed = click_token_parse(token.rstrip(_TRAILING + ")"))
    if parsed is None:
        return _not_found()
    message_id, index = parsed
    row = (
        Message.objects.filter(id=message_id)
        .values_list("rendered", "channel", "journey", "customer__external_id")
        .first()
    )
    if row is None:
        return _not_found()
    rendered, channel, journey, customer = row
    links = rendered.get("links") if isinstance(rendered, dict) else None
    if not isinstance(links, list) or index >= len(links) or not isinstance(links[index], str):
        return _not_found()
    url = links[index]
    if request.method == "GET":
        try:
            click_record(
                message_id=message_id,
                index=index,
                url=url,
                customer=customer,
                channel=channel,
                journey=journey,
                now=timezone.now(),
            )
        except Exception:
            # The customer still gets where the link goes; a lost click is logged.
            logger.exception("could not record a click on message %s link %s", message_id, index)
    return HttpResponseRedirect(url)
