"""How SendGrid email copies are grouped into one Mail Send request: pure functions.

No I/O here: ``prepare`` checks a message and splits it into what a request shares and
what is its own, ``grouped`` puts messages whose requests would be the same into
requests of up to ``max_personalizations``, and ``payload`` is the request body for
one message or a group. ``channels.adapters.sendgrid`` sends them.

Batching
--------

SendGrid takes up to 1,000 personalizations in one request, and at most 1,000
recipients (to + cc + bcc) in all; a request with more is a 400 ("The
personalization block is limited to 1000 personalizations per API request", "There
is a limit of 1000 total recipients (to + cc + bcc) per request": SendGrid's Mail
Send errors page). A personalization may carry its own ``to``, ``subject``,
``headers``, ``substitutions``, ``custom_args`` and ``send_at``, which override the
request's (SendGrid's Personalizations page; keys of ``custom_args`` and
``headers`` are merged, the personalization's winning), while ``from``,
``content``, ``categories`` and ``mail_settings`` belong to the whole request.
Custom args take string values, 10,000 bytes at most in all (the figure SendGrid's
Mail Send reference gives; its errors page, checked for this, does not list it);
the emulator enforces it per personalization with the top-level args merged in.
Ours are ``{"message_id": "<id>"}``, far below it. One address may appear only
once across a request's personalizations ("Each unique email address in the
personalizations array should only be included once"): a 400 otherwise.

So ``send_batch`` groups the messages of a batch whose requests would be the same
but for the personalization - the same sender, the same rendered text and HTML
(categories and mail settings are the adapter's, the same for all) - into one
request of up to ``max_personalizations`` (default and maximum 1,000; more is
clamped to 1,000, and 1 sends every message alone). Each message is one
personalization with its recipient, its ``custom_args`` message id and its
headers (``List-Unsubscribe`` and ``List-Unsubscribe-Post`` point at that
customer's one-click link, so they are per personalization); the subject is the
request's when every message has the same one, else each personalization's. A
recipient already in a group starts or joins another, and a message SendGrid would
refuse anyway (no subject, or neither text nor HTML) is not grouped but sent
alone. A group of one is sent exactly as a message alone.

When it helps: the content is rendered per customer (Liquid), so two messages
share content only when the template's text and HTML use no customer data -
broadcasts, announcements, identical notices (a personalized subject alone still
groups; links unique to the recipient do not prevent it, see Substitutions). Most
real sends are personalized (``Hi {{ customer.first_name }}``) and still make one
request per message, as before; grouping then costs a dictionary lookup per
message (and the search for its personal strings) and nothing else.

Substitutions
-------------

Marketing email is never quite the same for two recipients: each copy carries
its own one-click unsubscribe and preference-center links (signed per customer)
and its own tracked links (``/r/<signed token>`` per message and link). The
dispatcher lists those strings in ``metadata["personal"]``. Each one that occurs
in the text, the HTML or the subject is replaced by a substitution tag
(``[%p0%]``, ``[%p1%]``, ... numbered in order of first appearance: text, HTML,
subject), longer strings first so that one containing another is matched whole,
and the HTML-escaped form of a string is matched too (a tag of its own). Messages
whose templated content is the same group as above, and in a group request the
content (and the subject, when all are the same) is the templated one while each
personalization carries ``"substitutions": {tag: its own string}``; SendGrid puts
the strings back into the text, the HTML, the subject (and reply-to, custom args,
which hold no tag of ours) of that personalization's mail, so every recipient gets
exactly the content it was rendered with. Substituting back is the exact inverse
of templating as long as nothing else looks like a tag: a message whose subject,
content or headers already hold ``[%p`` is not templated (it still groups, with
messages of identical content only). Nor is one whose substitutions would pass
``MAX_SUBSTITUTION_BYTES`` (10,000 bytes, keys and values in UTF-8: SendGrid's
older documented limit, the current one being 50,000), so its content names its
recipient and it goes alone in practice. A message alone, by design or when a
refused group is sent again message by message, is sent exactly as before: its
own content, no tags, no substitutions.

Every message of a group gets the group's outcome. Accepted: all accepted, with the
same ``X-Message-Id`` as ``provider_message_id``; SendGrid's events for each
recipient carry ``sg_message_id = "<X-Message-Id>.<per recipient>"`` and that
personalization's ``custom_args``, so the event webhook finds the message by its
``message_id`` and checks the ``X-Message-Id`` prefix, one to one as before
(``channels.webhooks.providers.sendgrid``). Transient or unknown: all of them the same, and
for the same reason (the request never left / may have been queued). A 400 or 413
refuses the whole request and queues none of it, so one bad address among 1,000
would fail 999 good messages: when SendGrid's errors name a personalization (or no
field at all), each message of the group is sent again alone, in a second round
after the batch's other requests, and only the bad one fails; when they name a
shared part (``from``, ``content``, ``subject``) every message would fail alone the
same way, so they fail together without a second round. Addresses are checked
before grouping only as far as ``parse_address`` does (one ``@``, no white space),
which SendGrid's own check is stricter than; the resend alone is what isolates
the rest. Sending again after a 400 cannot duplicate anything: nothing of the
request was queued.

With ``rate_per_second`` set, a request of N messages draws N permits (the rate is
in messages); the messages of a refused group draw again when sent alone.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from channels.adapters.base import AdapterError, OutboundMessage

#: SendGrid's limit: at most 1,000 personalizations (and 1,000 recipients, to + cc + bcc)
#: in one Mail Send request. Each of ours has one recipient.
MAX_PERSONALIZATIONS = 1000
#: The most a message's substitutions may take (tags and values, UTF-8 bytes) for it to
#: be grouped by substitution. SendGrid documents 50,000 bytes per personalization
#: (10,000 in older documents): the lower figure, to be safe.
MAX_SUBSTITUTION_BYTES = 10_000
#: How each substitution tag starts (``[%p0%]``, ``[%p1%]``, ...). Content that holds it
#: already is never templated, so every tag in a templated text is one of ours.
_TAG_START = "[%p"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message checked for sending: its recipient and sender as SendGrid takes them,
    and ``shared``, what its request has in common with another message's that may
    share it (None: it goes alone).

    ``subject``, ``body`` and ``html`` are what a group request carries for it: the
    message's own, or templated (each personal string a tag) when ``substitutions``
    (tag -> string) is not empty. A request of this message alone never uses them.
    """

    message: OutboundMessage
    to: dict[str, str]
    sender: dict[str, str]
    shared: tuple[Any, ...] | None
    subject: str = ""
    body: str = ""
    html: str = ""
    substitutions: dict[str, str] = field(default_factory=dict)


def _refused(message: str, code: str) -> AdapterError:
    """A message the adapter will not send as it is (raised before any request)."""
    return AdapterError(message, permanent=True, code=code)


#: A bare address of dot-atoms only, which ``parseaddr`` returns as it is, without a name.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def parse_address(value: str) -> dict[str, str] | None:
    """``"Name <a@example.com>"`` or ``"a@example.com"`` as SendGrid's ``{"email", "name"}``."""
    if _PLAIN_ADDRESS.fullmatch(value):
        return {"email": value}  # what the full parse below gives, at a fraction of its cost
    if "\r" in value or "\n" in value:
        return None
    name, address = parseaddr(value)
    if "@" not in address or any(ch.isspace() for ch in address):
        return None
    parsed = {"email": address}
    if name:
        parsed["name"] = name
    return parsed


def prepare(
    message: OutboundMessage, *, default_sender: dict[str, str] | None, template: bool = True
) -> Prepared:
    """Check a message and split it into what a request shares and what is its own;
    with ``template``, its personal strings (``metadata["personal"]``) made tags."""
    to = parse_address(message.to)
    if to is None:
        raise _refused(f"not an email address: {message.to!r}", "sendgrid:invalid_to")
    if message.sender:
        sender = parse_address(message.sender)
        if sender is None:
            raise _refused(
                f"sender is not an email address: {message.sender!r}",
                "sendgrid:invalid_sender",
            )
    elif default_sender is not None:
        sender = default_sender
    else:
        raise _refused(
            "no sender: set OPTIONS['from_email'] or OutboundMessage.sender",
            "sendgrid:no_sender",
        )
    for name, value in message.headers.items():
        if any(ch in f"{name}{value}" for ch in "\r\n") or not name.strip():
            raise _refused(f"invalid header {name!r}", "sendgrid:invalid_header")
    if not (message.subject and (message.body or message.html)):
        # SendGrid refuses it (no subject, or no content): alone, so it fails alone.
        return Prepared(message=message, to=to, sender=sender, shared=None)
    subject, body, html = message.subject, message.body, message.html
    substitutions: dict[str, str] = {}
    personal = message.metadata.get("personal") if template and message.metadata else None
    if personal and isinstance(personal, list | tuple):
        done = templated(personal, (body, html, subject), message.headers.values())
        if done is not None:
            (body, html, subject), substitutions = done
    return Prepared(
        message=message,
        to=to,
        sender=sender,
        # Templated content groups only with templated content: a message not
        # templated has no tag of ours in it, whatever its text.
        shared=(sender["email"], sender.get("name"), body, html, bool(substitutions)),
        subject=subject,
        body=body,
        html=html,
        substitutions=substitutions,
    )


def grouped(
    singles: list[list[tuple[int, Prepared]]], *, max_personalizations: int
) -> list[list[tuple[int, Prepared]]]:
    """Messages whose requests would differ only in their personalization, in
    requests of up to ``max_personalizations``; the rest one request each.

    A recipient address appears at most once in a request (SendGrid refuses a
    repeated one), and a message SendGrid would refuse anyway (no subject, no
    content) is never grouped, so that it fails alone.
    """
    if max_personalizations == 1 or len(singles) <= 1:
        return singles
    requests: list[list[tuple[int, Prepared]]] = []
    open_groups: dict[tuple[Any, ...], list[tuple[list[tuple[int, Prepared]], set[str]]]] = {}
    for request in singles:
        index, prepared = request[0]
        if prepared.shared is None:
            requests.append(request)
            continue
        address = prepared.to["email"].lower()
        candidates = open_groups.setdefault(prepared.shared, [])
        for members, addresses in candidates:
            if len(members) < max_personalizations and address not in addresses:
                members.append((index, prepared))
                addresses.add(address)
                break
        else:
            members = [(index, prepared)]
            candidates.append((members, {address}))
            requests.append(members)
    return requests


def payload(
    members: Sequence[Prepared], *, categories: Sequence[str] = (), sandbox: bool = False
) -> dict[str, Any]:
    """The request body for one message, or for several as personalizations.

    Alone, a message's subject, ``custom_args`` and headers are at the top level,
    with its own content (never templated). Together, the content is the group's
    (templated, if the messages were) and each personalization holds its recipient,
    its ``custom_args``, its headers, its substitutions if any, and its subject
    unless all the subjects are the same.
    """
    first = members[0].message
    alone = len(members) == 1
    body, html = (first.body, first.html) if alone else (members[0].body, members[0].html)
    # SendGrid requires text/plain before text/html; an empty value is rejected.
    content = []
    if body:
        content.append({"type": "text/plain", "value": body})
    if html:
        content.append({"type": "text/html", "value": html})

    if alone:
        payload: dict[str, Any] = {
            "personalizations": [{"to": [members[0].to]}],
            "from": members[0].sender,
            "subject": first.subject,
            "content": content,
            "custom_args": {"message_id": str(first.message_id)},
        }
        if first.headers:
            payload["headers"] = dict(first.headers)
    else:
        # Templated subjects (those of messages with substitutions) are compared as
        # templated; when they differ, each personalization has its own subject as
        # written, which holds no tag, so that substituting leaves it alone.
        subject = members[0].subject
        same_subject = all(m.subject == subject for m in members)
        personalizations = []
        for member in members:
            message = member.message
            personalization: dict[str, Any] = {
                "to": [member.to],
                "custom_args": {"message_id": str(message.message_id)},
            }
            if not same_subject:
                personalization["subject"] = message.subject
            if message.headers:
                personalization["headers"] = dict(message.headers)
            if member.substitutions:
                personalization["substitutions"] = dict(member.substitutions)
            personalizations.append(personalization)
        payload = {"personalizations": personalizations, "from": members[0].sender}
        if same_subject:
            payload["subject"] = subject
        payload["content"] = content
    if categories:
        payload["categories"] = list(categories)
    if sandbox:
        payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return payload


def templated(
    personal: Sequence[Any], texts: Sequence[str], others: Iterable[str] = ()
) -> tuple[list[str], dict[str, str]] | None:
    """``texts`` with each occurrence of a personal string replaced by a substitution
    tag, and the substitutions (tag -> string) that put them back; None when there is
    nothing to substitute, or when it cannot be done safely.

    Matches are leftmost-longest and never overlap (a string that contains another is
    matched whole), so substituting back gives the texts exactly. Tags are numbered in
    order of first appearance across ``texts``: two messages rendered from the same
    template get the same templated texts whatever order their strings are listed in.
    Not templated: texts or ``others`` (the headers: SendGrid might substitute there
    too) that hold a tag-like ``[%p`` already, and substitutions over
    ``MAX_SUBSTITUTION_BYTES``.
    """
    wanted = [value for value in personal if isinstance(value, str) and value]
    if not wanted:
        return None
    for text in texts:
        if _TAG_START in text:
            return None
    for text in others:
        if _TAG_START in text:
            return None
    # An HTML template may hold a string escaped ("&" as "&amp;"): that form too.
    wanted += [html_lib.escape(value) for value in wanted]
    strings = sorted(dict.fromkeys(wanted), key=len, reverse=True)
    prefix = _common_prefix(strings)
    if len(prefix) >= _MIN_ANCHOR:
        # At each occurrence of the prefix, the longest string there: one set lookup per
        # length (personal strings come in few lengths), longest first.
        by_length: dict[int, set[str]] = {}
        for string in strings:
            by_length.setdefault(len(string), set()).add(string)
        lengths: list[tuple[int, set[str]]] | None = sorted(by_length.items(), reverse=True)
    else:
        lengths = None

    tags: dict[str, str] = {}  # personal string -> its tag
    templated: list[str] = []
    for text in texts:
        found = _matches(text, strings, prefix, lengths)
        if not found:
            templated.append(text)
            continue
        pieces: list[str] = []
        last = 0
        for at, string in found:
            tag = tags.get(string)
            if tag is None:
                tag = tags[string] = f"{_TAG_START}{len(tags)}%]"
            pieces.append(text[last:at])
            pieces.append(tag)
            last = at + len(string)
        pieces.append(text[last:])
        templated.append("".join(pieces))
    if not tags:
        return None
    substitutions = {tag: string for string, tag in tags.items()}
    if substitution_bytes(substitutions) > MAX_SUBSTITUTION_BYTES:
        return None
    return templated, substitutions


#: A common prefix at least this long (``https://`` and more, as links have) is searched
#: for instead of each string: one pass over the text, not one per string.
_MIN_ANCHOR = 8


def _matches(
    text: str,
    strings: Sequence[str],
    prefix: str,
    lengths: Sequence[tuple[int, set[str]]] | None,
) -> list[tuple[int, str]]:
    """The leftmost-longest non-overlapping occurrences of ``strings`` (longest first,
    all starting with ``prefix``) in ``text``: (position, string), in order. With
    ``lengths`` (the strings by length, longest first) the prefix is searched for."""
    found: list[tuple[int, str]] = []
    if lengths is not None:
        at = text.find(prefix)
        while at != -1:
            for length, same_length in lengths:
                string = text[at : at + length]
                if string in same_length:
                    found.append((at, string))
                    at = text.find(prefix, at + length)
                    break
            else:
                at = text.find(prefix, at + 1)
        return found
    candidates: list[tuple[int, int, str]] = []
    for string in strings:
        at = text.find(string)
        while at != -1:
            candidates.append((at, -len(string), string))
            at = text.find(string, at + 1)
    candidates.sort()
    end = 0
    for at, minus_length, string in candidates:
        if at >= end:
            found.append((at, string))
            end = at - minus_length
    return found


def _common_prefix(strings: Sequence[str]) -> str:
    """The longest prefix of every one of ``strings`` (those of the least and the
    greatest), found by halving with C-speed comparisons."""
    if len(strings) == 1:
        return strings[0]
    first, last = min(strings), max(strings)
    low, high = 0, len(first)
    while low < high:
        middle = (low + high + 1) // 2
        if last.startswith(first[:middle]):
            low = middle
        else:
            high = middle - 1
    return first[:low]


def substitution_bytes(substitutions: Mapping[str, str]) -> int:
    """The size of a personalization's substitutions: tags and values, UTF-8 bytes."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items())


def isolable(errors: list[dict[str, Any]]) -> bool:
    """Whether a group's 400 may be one message's fault: it names no field, or names a
    personalization. An error in a shared part (``from``, ``content``, ``subject``)
    would come back for every message alone, so they are not sent again."""
    if not errors:
        return True
    return any(not e.get("field") or str(e["field"]).startswith("personalizations") for e in errors)
