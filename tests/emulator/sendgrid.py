"""SendGrid's v3 Mail Send endpoint on the emulator: ``POST /v3/mail/send``.

It checks what SendGrid checks before queueing a message and answers the way
SendGrid does:

- ``Authorization: Bearer SG.…`` or 401 with SendGrid's error body;
- a JSON body with 1..1000 personalizations and at most 1000 recipients in all
  (to + cc + bcc), each personalization with a non-empty ``to`` list of
  ``{"email": ...}`` objects holding a plausible address, no address twice in the
  whole request (case-insensitive), string-valued ``custom_args`` and ``headers``
  of its own and a string ``subject`` if any; ``from.email``; a subject (top
  level or in every personalization); non-empty ``content`` with text/plain
  before text/html; string-valued ``custom_args`` of at most 10,000 bytes
  (checked per personalization, the top-level args merged in); string-valued
  ``headers``; ``substitutions`` of a personalization an object of string values,
  of at most 10,000 bytes (tags and values, UTF-8: SendGrid's older documented
  limit, the current one being 50,000); at most 10 categories. Any violation is a 400 with
  ``{"errors": [{"message", "field", "help"}]}``, fields of a personalization
  named ``personalizations.<i>...`` as SendGrid names them, and nothing is queued;
- success is 202 with an empty body and an ``X-Message-Id`` header (22
  base64url characters, like SendGrid's), one for the whole request; with
  ``mail_settings.sandbox_mode`` enabled it is 200 and nothing is queued.

Every request is in ``emulator.received``. Each personalization of an accepted
request is a mail of its own, as SendGrid delivers it: ``accepted(emulator)``
holds one ``AcceptedMail`` per personalization, with the request's
``X-Message-Id`` and the mail as if it had been sent alone (``payload``: that one
personalization, its subject, its ``custom_args`` and ``headers`` merged over the
request's, and its ``substitutions`` applied: each tag replaced by its value in
every content block, the subject and the custom args, as SendGrid does). The
Event Webhook posts one batch of events per such mail, each with
``sg_message_id = "<X-Message-Id>.<per recipient suffix>"``.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from tests.emulator.server import ProviderEmulator, Received, Response, wait_until

PATH = "/v3/mail/send"
HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_SUBSTITUTIONS_BYTES = 10_000
MAX_CATEGORIES = 10
UNAUTHORIZED = {
    "errors": [
        {
            "message": "The provided authorization grant is invalid, expired, or revoked",
            "field": None,
            "help": None,
        }
    ]
}
_ADDRESS = re.compile(r"[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;.]+")


@dataclass(frozen=True)
class AcceptedMail:
    """One mail the emulator queued - one personalization of an accepted request:
    SendGrid's id for the request, the mail as if sent alone, the HTTP headers."""

    x_message_id: str
    payload: dict[str, Any]
    headers: dict[str, str]
    #: The personalization's place in the request, and the request body itself.
    index: int = 0
    request: dict[str, Any] = field(default_factory=dict)


def effective_mail(mail: dict[str, Any], index: int) -> dict[str, Any]:
    """Personalization ``index`` of a request as a mail of its own: the request with only
    that personalization, whose subject replaces the request's and whose
    ``custom_args`` and ``headers`` are merged over the request's (SendGrid's rules),
    and whose ``substitutions`` are made in the content, the subject and the custom
    args. (The personalization itself is kept as it was sent, substitutions and all.)"""
    personalization = mail["personalizations"][index]
    payload = {**mail, "personalizations": [personalization]}
    if personalization.get("subject"):
        payload["subject"] = personalization["subject"]
    for key in ("custom_args", "headers"):
        merged = {**(mail.get(key) or {}), **(personalization.get(key) or {})}
        if merged:
            payload[key] = merged
    substitutions = personalization.get("substitutions")
    if substitutions:
        substitute = _substituter(substitutions)
        payload["content"] = [
            {**block, "value": substitute(block["value"])} for block in mail["content"]
        ]
        if isinstance(payload.get("subject"), str):
            payload["subject"] = substitute(payload["subject"])
        if payload.get("custom_args"):
            payload["custom_args"] = {
                key: substitute(value) for key, value in payload["custom_args"].items()
            }
    return payload


def _substituter(substitutions: dict[str, str]):
    """A function replacing every tag in a text by its value, in one pass (a value is
    never searched for tags), the longest tag first where several match at one place."""
    pattern = _tags_pattern(frozenset(substitutions))

    def substitute(text: str) -> str:
        return pattern.sub(lambda match: substitutions[match[0]], text)

    return substitute


@functools.lru_cache(maxsize=256)
def _tags_pattern(tags: frozenset[str]) -> re.Pattern[str]:
    """One regular expression for these tags (the same for most personalizations)."""
    return re.compile("|".join(map(re.escape, sorted(tags, key=len, reverse=True))))


_accepted: weakref.WeakKeyDictionary[ProviderEmulator, list[AcceptedMail]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


@dataclass
class EventHook:
    """The Event Webhook setting: where to post, the signing key, what happens to mail."""

    url: str
    signer: EventSigner
    #: Events posted for every accepted mail, in order, as one signed batch.
    kinds: tuple[str, ...] = ("processed", "delivered")
    #: Recipient address -> the events for mail to it instead (e.g. processed, bounce).
    outcomes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    delay: float = 0.05
    #: (HTTP status or None, the events posted) for every batch, in order.
    posted: list[tuple[int | None, list[dict[str, Any]]]] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def schedule(self, mail: AcceptedMail) -> None:
        to = mail.payload["personalizations"][0]["to"][0]["email"]
        kinds = self.outcomes.get(to.lower(), self.kinds)
        events = [event(mail, kind) for kind in kinds]
        thread = threading.Thread(target=self._post, args=(events,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _post(self, events: list[dict[str, Any]]) -> None:
        time.sleep(self.delay)
        try:
            status, _body = post_events(self.url, events, self.signer)
        except OSError:
            status = None
        with _lock:
            self.posted.append((status, events))

    def wait(self, timeout: float = 5.0) -> None:
        """Until every batch scheduled so far has been posted (or failed)."""
        threads = list(self._threads)
        if not wait_until(lambda: not any(thread.is_alive() for thread in threads), timeout):
            raise TimeoutError(f"SendGrid events still being posted after {timeout}s")


_event_hooks: weakref.WeakKeyDictionary[ProviderEmulator, EventHook] = weakref.WeakKeyDictionary()


def post_events_to(emulator: ProviderEmulator, url: str, signer: EventSigner, **options: Any):
    """Post signed Event Webhook batches to ``url`` for every mail accepted from now on,
    as SendGrid does once the Event Webhook is set up. Returns the ``EventHook``."""
    hook = EventHook(url=url, signer=signer, **options)
    with _lock:
        _event_hooks[emulator] = hook
    return hook


def accepted(emulator: ProviderEmulator) -> list[AcceptedMail]:
    """The mails this emulator queued (202), one per personalization, in arrival order."""
    with _lock:
        return list(_accepted.get(emulator, ()))


def clear(emulator: ProviderEmulator) -> None:
    """Forget the queued mails (``emulator.reset()`` only clears the request log)."""
    with _lock:
        _accepted.get(emulator, []).clear()


def new_message_id() -> str:
    """An id shaped like SendGrid's ``X-Message-Id``: 16 random bytes, base64url, unpadded."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


class _Invalid(Exception):
    def __init__(self, message: str, field: str | None, anchor: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.help = f"{HELP}#message.{anchor or field}" if (anchor or field) else None


def _is_email(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 320 and bool(_ADDRESS.fullmatch(value))


def _check_address(value: Any, field: str, anchor: str, message: str) -> None:
    if not isinstance(value, dict) or not _is_email(value.get("email")):
        raise _Invalid(message, field, anchor)
    if "name" in value and not isinstance(value["name"], str):
        raise _Invalid("The name must be a string.", f"{field}.name", anchor)


def _size(custom_args: dict[str, Any]) -> int:
    return len(json.dumps(custom_args, ensure_ascii=False).encode())


def _check_custom_args(custom_args: Any, field: str) -> None:
    if not isinstance(custom_args, dict):
        raise _Invalid("The custom_args parameter must be an object.", field, "custom_args")
    for key, value in custom_args.items():
        if not isinstance(value, str):
            raise _Invalid(
                "Bad Request: custom_args values must be strings.",
                f"{field}.{key}",
                "custom_args",
            )
    if _size(custom_args) > MAX_CUSTOM_ARGS_BYTES:
        raise _Invalid(
            f"The custom_args parameter may not exceed {MAX_CUSTOM_ARGS_BYTES} bytes.",
            field,
            "custom_args",
        )


def _substitutions_size(substitutions: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items())


def _check_substitutions(substitutions: Any, field: str) -> None:
    if not isinstance(substitutions, dict) or not all(
        isinstance(v, str) for v in substitutions.values()
    ):
        raise _Invalid(
            "The substitutions parameter must be a collection of key/value pairs with "
            "string values.",
            field,
            "personalizations.substitutions",
        )
    if _substitutions_size(substitutions) > MAX_SUBSTITUTIONS_BYTES:
        raise _Invalid(
            f"The substitutions parameter may not exceed {MAX_SUBSTITUTIONS_BYTES} bytes "
            "per personalization object.",
            field,
            "personalizations.substitutions",
        )


def _check_headers(headers: Any, field: str) -> None:
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise _Invalid(
            "The headers parameter must be a collection of key/value pairs with string values.",
            field,
            "headers",
        )


def _validate(mail: Any) -> None:
    """Raise ``_Invalid`` on the first problem SendGrid would report."""
    if not isinstance(mail, dict):
        raise _Invalid("Bad Request", None)

    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        raise _Invalid("You must have at least one personalization.", "personalizations")
    if len(personalizations) > MAX_PERSONALIZATIONS:
        raise _Invalid(
            "The personalization block is limited to 1000 personalizations per API request. "
            f"You have provided {len(personalizations)} personalizations. Please consider "
            "splitting this into multiple requests and resending your request.",
            "personalizations",
        )
    recipients = sum(
        len(p.get(kind) or []) if isinstance(p, dict) and isinstance(p.get(kind), list) else 0
        for p in personalizations
        for kind in ("to", "cc", "bcc")
    )
    if recipients > MAX_RECIPIENTS:
        raise _Invalid(
            "There is a limit of 1000 total recipients (to + cc + bcc) per request.",
            "personalizations",
        )
    seen: set[str] = set()
    for i, personalization in enumerate(personalizations):
        field = f"personalizations.{i}"
        if not isinstance(personalization, dict):
            raise _Invalid("Each personalization must be an object.", field, "personalizations")
        to = personalization.get("to")
        if not isinstance(to, list) or not to:
            raise _Invalid(
                "The to array is required for all personalization objects, "
                "and must have at least one email object with a valid email address.",
                f"{field}.to",
                "personalizations.to",
            )
        for kind in ("to", "cc", "bcc"):
            addresses = personalization.get(kind)
            if kind != "to" and addresses is None:
                continue
            if not isinstance(addresses, list):
                raise _Invalid(
                    f"The {kind} parameter must be an array.",
                    f"{field}.{kind}",
                    f"personalizations.{kind}",
                )
            for j, recipient in enumerate(addresses):
                _check_address(
                    recipient,
                    f"{field}.{kind}.{j}.email",
                    f"personalizations.{kind}",
                    "Does not contain a valid address.",
                )
                address = recipient["email"].lower()
                if address in seen:
                    raise _Invalid(
                        "Each unique email address in the personalizations array should only "
                        f"be included once. You have included {recipient['email']} more than "
                        "once.",
                        f"{field}.{kind}.{j}.email",
                        f"personalizations.{kind}",
                    )
                seen.add(address)
        subject = personalization.get("subject")
        if subject is not None and not isinstance(subject, str):
            raise _Invalid("The subject must be a string.", f"{field}.subject", "subject")
        _check_headers(personalization.get("headers", {}), f"{field}.headers")
        custom_args = personalization.get("custom_args")
        if custom_args is not None:
            _check_custom_args(custom_args, f"{field}.custom_args")
        substitutions = personalization.get("substitutions")
        if substitutions is not None:
            _check_substitutions(substitutions, f"{field}.substitutions")

    sender = mail.get("from")
    _check_address(
        sender,
        "from.email",
        "from",
        "The from object must be provided for every email send. It is an object that "
        'requires the email parameter, but may also contain a name parameter.  e.g. {"email" '
        ': "example@example.com"}  or {"email" : "example@example.com", "name" : "Example '
        'Recipient"}.',
    )

    subject = mail.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise _Invalid("The subject must be a string.", "subject")
    if not subject and not all(p.get("subject") for p in personalizations):
        raise _Invalid(
            "The subject is required. You can get around this requirement if you use a "
            "template with a subject defined or if every personalization has a subject defined.",
            "subject",
        )

    content = mail.get("content")
    if not isinstance(content, list) or not content:
        raise _Invalid(
            "Unless a valid template_id is provided, the content parameter is required. "
            "There must be at least one defined content block. We typically suggest both "
            "text/plain and text/html blocks are included, but only one block is required.",
            "content",
        )
    types = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _Invalid("The content type must be a string.", f"content.{i}.type", "content")
        value = block.get("value")
        if not isinstance(value, str) or not value:
            raise _Invalid(
                "The content value must be a string at least one character in length.",
                f"content.{i}.value",
                "content",
            )
        types.append(block["type"].lower())
    expected = [t for t in ("text/plain", "text/html") if t in types]
    if types[: len(expected)] != expected:
        raise _Invalid(
            "If present, text/plain and text/html may only be provided in order, "
            "with text/plain first, followed by text/html.",
            "content",
        )

    custom_args = mail.get("custom_args")
    if custom_args is not None:
        _check_custom_args(custom_args, "custom_args")
    # The limit is on the args each mail carries: the request's merged with its own.
    for i, personalization in enumerate(personalizations):
        own = personalization.get("custom_args") or {}
        if own and _size({**(custom_args or {}), **own}) > MAX_CUSTOM_ARGS_BYTES:
            raise _Invalid(
                f"The custom_args parameter may not exceed {MAX_CUSTOM_ARGS_BYTES} bytes.",
                f"personalizations.{i}.custom_args",
                "custom_args",
            )

    _check_headers(mail.get("headers", {}), "headers")

    categories = mail.get("categories")
    if categories is not None:
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise _Invalid("Categories must be an array of strings.", "categories")
        if len(categories) > MAX_CATEGORIES:
            raise _Invalid("Too many categories: at most 10 per message.", "categories")

    mail_settings = mail.get("mail_settings", {})
    if not isinstance(mail_settings, dict):
        raise _Invalid("The mail_settings parameter must be an object.", "mail_settings")
    sandbox = mail_settings.get("sandbox_mode")
    if sandbox is not None and (
        not isinstance(sandbox, dict) or not isinstance(sandbox.get("enable"), bool)
    ):
        raise _Invalid(
            "The sandbox mode enable param should be a boolean value.",
            "mail_settings.sandbox_mode.enable",
            "mail_settings.sandbox_mode",
        )


def _error(message: str, field: str | None, help_: str | None) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field, "help": help_}]}


def install(emulator: ProviderEmulator) -> None:
    """Register SendGrid's routes on ``emulator``."""
    with _lock:
        _accepted.setdefault(emulator, [])

    def mail_send(request: Received) -> Response:
        auth = request.header("Authorization")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key.startswith("SG.") or len(key) < 4:
            return 401, {}, UNAUTHORIZED
        try:
            mail = request.json()
        except (ValueError, UnicodeDecodeError):
            return 400, {}, _error("Bad Request", None, None)
        try:
            _validate(mail)
        except _Invalid as exc:
            return 400, {}, _error(str(exc), exc.field, exc.help)
        sandbox = ((mail.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable")
        if sandbox:
            return 200, {}, None
        message_id = new_message_id()
        headers = dict(request.headers)
        mails = [
            AcceptedMail(
                x_message_id=message_id,
                payload=effective_mail(mail, i),
                headers=headers,
                index=i,
                request=mail,
            )
            for i in range(len(mail["personalizations"]))
        ]
        with _lock:
            _accepted.setdefault(emulator, []).extend(mails)
            hook = _event_hooks.get(emulator)
        if hook is not None:
            for accepted_mail in mails:
                hook.schedule(accepted_mail)
        return 202, {"X-Message-Id": message_id}, None

    emulator.route("POST", re.escape(PATH), mail_send)


# --- the Event Webhook: signed batches of delivery and engagement events -------------


class EventSigner:
    """SendGrid's Signed Event Webhook: a P-256 key pair; we hold the private half.

    ``public_key`` is what the SendGrid console shows (base64 DER), the value our
    ``SENDGRID_WEBHOOK_PUBLIC_KEY`` setting takes.
    """

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        }


def event(mail: AcceptedMail, kind: str, **fields: Any) -> dict[str, Any]:
    """One event about ``mail`` as SendGrid posts it: custom_args flattened in."""
    payload = mail.payload
    to = payload["personalizations"][0]["to"][0]["email"]
    body = {
        "email": to,
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="),
        # SendGrid's id of the request, then one of its own per recipient mail.
        "sg_message_id": f"{mail.x_message_id}.recvd-{secrets.token_hex(4)}-1-{mail.index}-0",
        "smtp-id": f"<{mail.x_message_id}@ismtpd0001p1mdw1.sendgrid.net>",
        **(payload.get("custom_args") or {}),
    }
    if kind in ("processed", "delivered", "open", "click", "bounce", "dropped"):
        body["category"] = payload.get("categories", [])
    if kind == "delivered":
        body["response"] = "250 OK"
    if kind == "bounce":
        body.update(
            type="bounce", status="5.1.1", reason="550 5.1.1 The email account does not exist."
        )
    if kind == "dropped":
        body["reason"] = "Bounced Address"
    if kind in ("open", "click"):
        body["useragent"] = "Mozilla/5.0"
        body["ip"] = "203.0.113.9"
    if kind == "click":
        body["url"] = "https://stride.example.com/shoes"
    body.update(fields)
    return body


def post_events(
    url: str, events: list[dict[str, Any]], signer: EventSigner, *, timestamp: int | None = None
) -> tuple[int, bytes]:
    """POST a signed batch to ``url`` the way SendGrid does; returns (status, body)."""
    import urllib.error
    import urllib.request

    body = json.dumps(events).encode()
    headers = {"Content-Type": "application/json", **signer.headers(body, timestamp)}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
