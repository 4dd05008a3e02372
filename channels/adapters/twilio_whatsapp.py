"""WhatsApp through Twilio Programmable Messaging, on the official ``twilio`` SDK.

Configuration (the options of ``TwilioSmsAdapter``)::

    CHANNEL_ADAPTERS = {"whatsapp": {
        "BACKEND": "channels.adapters.twilio_whatsapp.TwilioWhatsAppAdapter",
        "OPTIONS": {
            "account_sid": "AC...", "auth_token": "...",
            "from_number": "+14155238886",        # a WhatsApp-enabled sender, E.164
                                                  # or "messaging_service_sid": "MG..."
            "status_callback": "https://example.com/webhooks/twilio/status",  # optional
            "timeout": 10, "concurrency": 8,
            "base_url": "http://127.0.0.1:8025",  # optional: the local provider emulator
        },
    }}

``from_number`` (or a message's own ``sender``) is sent as ``From:
whatsapp:+E164`` and the recipient as ``To: whatsapp:+E164``; either may already
carry the prefix. Through a Messaging Service only ``To`` is given.

The 24-hour customer-care window
--------------------------------
WhatsApp takes a free-form message only within 24 hours of the customer's last
message to us; outside that window only an approved template (a Twilio Content
template, ``ContentSid`` ``HX...``) goes out. The dispatcher says what it knows in
``OutboundMessage.metadata["whatsapp"]``::

    {"session_open": True,                       # the customer wrote within 24 h
     "content_sid": "HX...",                     # an approved template, or ""
     "content_variables": {"1": "Alex", "2": "Trail shoe"}}

* ``session_open`` true - a session message: ``Body``. (With an empty body and a
  template, the template is sent instead: it is valid inside the window too.)
* ``session_open`` false with a ``content_sid`` - a template message:
  ``ContentSid`` and ``ContentVariables`` (a JSON object string), no ``Body``.
* ``session_open`` false without a template - Twilio is not called: a permanent
  failure, ``error_code`` ``"twilio:63016"``.
* No ``metadata["whatsapp"]`` at all, or no ``session_open`` in it - our notion
  of the window is unknown, so a session message is attempted and Twilio decides
  (with the template, if any, as the fallback below). Refusing without asking
  would drop messages to customers who did write in.
* Twilio refuses a session message with 63016 (our notion of the window was
  stale) - with a ``content_sid`` the same message is sent again at once as the
  template; without one it is a permanent ``"twilio:63016"`` failure.

Malformed metadata (not a dict, a non-bool ``session_open``, a non-string
``content_sid``, ``content_variables`` not a dict of strings) is a permanent
failure, ``"whatsapp:invalid_metadata"``, without calling Twilio.

Note that Twilio usually *accepts* a free-form message outside the window (201)
and fails it afterwards: the 63016 then arrives in the ``failed`` status callback,
not here. Only a synchronous 63016 can be retried with the template by the adapter.

``SendResult.detail["whatsapp_mode"]`` records what was sent: ``"session"``,
``"template"`` (then also ``content_sid``, and ``whatsapp_fallback`` =
``"twilio:63016"`` when it replaced a refused session message) or ``"none"``
(nothing was sent).

Outcomes
--------
As for SMS (see ``channels.adapters.twilio_sms``: transient 429/5xx/20429/30003,
unknown after a timeout or a connection lost after the request went out,
permanent for the other 4xx), plus the WhatsApp codes:

* permanent: 63016 (outside the window, no template to fall back on), 63003
  (channel could not find the To address) and 63024 (invalid message recipient),
  both with ``suppress="invalid"``, and 63032 (WhatsApp's 472, "user's number is
  part of an experiment": not an opt-out, so nothing is suppressed);
* transient: 63018 (rate limit exceeded for the channel).

``self.throttle()`` is called before each request to Twilio, the fallback
included.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from channels.adapters.base import AdapterError, OutboundMessage, SendResult
from channels.adapters.twilio_sms import (
    PERMANENT_CODES,
    SUPPRESS_REASONS,
    TRANSIENT_CODES,
    TwilioSmsAdapter,
)

PREFIX = "whatsapp:"
OUTSIDE_WINDOW = 63016

#: WhatsApp refusals that will not change on retry.
WHATSAPP_PERMANENT_CODES = frozenset({OUTSIDE_WINDOW, 63003, 63024, 63032})
#: WhatsApp refusals worth retrying later.
WHATSAPP_TRANSIENT_CODES = frozenset({63018})
#: WhatsApp refusals that say the address is unusable on WhatsApp.
WHATSAPP_SUPPRESS_REASONS = {63003: "invalid", 63024: "invalid"}

_E164 = re.compile(r"\+[1-9]\d{6,14}")


class InvalidMetadata(ValueError):
    """``metadata["whatsapp"]`` is not what the dispatcher contract says."""


@dataclass(frozen=True, slots=True)
class WhatsAppPlan:
    """What the dispatcher knows about the window, from ``metadata["whatsapp"]``."""

    #: True/False as the dispatcher knows it; None when it did not say.
    session_open: bool | None = None
    content_sid: str = ""
    content_variables: dict[str, str] | None = None

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> WhatsAppPlan:
        raw = metadata.get("whatsapp")
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise InvalidMetadata(f'metadata["whatsapp"] must be a dict, got {type(raw).__name__}')
        session_open = raw.get("session_open")
        if session_open is not None and not isinstance(session_open, bool):
            raise InvalidMetadata(f"session_open must be a bool, got {session_open!r}")
        content_sid = raw.get("content_sid") or ""
        if not isinstance(content_sid, str):
            raise InvalidMetadata(f"content_sid must be a string, got {content_sid!r}")
        variables = raw.get("content_variables") or {}
        if not isinstance(variables, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in variables.items()
        ):
            raise InvalidMetadata(
                f"content_variables must map strings to strings, got {variables!r}"
            )
        return cls(session_open, content_sid.strip(), dict(variables))


def whatsapp_address(address: str) -> str:
    """``address`` with the ``whatsapp:`` prefix, whether or not it had it."""
    address = address.strip()
    return address if address.startswith(PREFIX) else PREFIX + address


class TwilioWhatsAppAdapter(TwilioSmsAdapter):
    provider = "twilio"
    permanent_codes = PERMANENT_CODES | WHATSAPP_PERMANENT_CODES
    transient_codes = TRANSIENT_CODES | WHATSAPP_TRANSIENT_CODES
    suppress_reasons = SUPPRESS_REASONS | WHATSAPP_SUPPRESS_REASONS
    thread_name_prefix = "twilio-whatsapp"

    def __init__(self, *, alias: str, **options: Any) -> None:
        super().__init__(alias=alias, **options)
        if self.from_number:
            self.from_number = whatsapp_address(self.from_number)
            if not _E164.fullmatch(self.from_number.removeprefix(PREFIX)):
                raise ImproperlyConfigured(
                    f"CHANNEL_ADAPTERS[{alias!r}]: the Twilio option 'from_number' must be "
                    f"a WhatsApp-enabled number in E.164 (+14155238886), got "
                    f"{options['from_number']!r}"
                )

    # --- sending -------------------------------------------------------------------

    def _base_params(self, message: OutboundMessage) -> dict[str, Any]:
        params: dict[str, Any] = {"to": whatsapp_address(message.to)}
        if message.sender or self.from_number:
            params["from_"] = whatsapp_address(message.sender or self.from_number)
        else:
            params["messaging_service_sid"] = self.messaging_service_sid
        if self.status_callback:
            params["status_callback"] = self.callback_url(message)
        return params

    def _session_params(self, message: OutboundMessage) -> dict[str, Any]:
        return {**self._base_params(message), "body": message.body}

    def _template_params(self, message: OutboundMessage, plan: WhatsAppPlan) -> dict[str, Any]:
        params = {**self._base_params(message), "content_sid": plan.content_sid}
        if plan.content_variables:
            params["content_variables"] = json.dumps(plan.content_variables, ensure_ascii=False)
        return params

    def send_one(self, message: OutboundMessage) -> SendResult:
        try:
            plan = WhatsAppPlan.from_metadata(message.metadata)
        except InvalidMetadata as exc:
            refused = AdapterError(
                f"invalid WhatsApp metadata: {exc}",
                permanent=True,
                code="whatsapp:invalid_metadata",
                detail={"whatsapp_mode": "none"},
            )
            return self.failed([message], refused)[0]
        if plan.session_open is False or (not message.body and plan.content_sid):
            if not plan.content_sid:
                return self._outside_window(message)
            return self._send_template(message, plan)

        self.throttle()
        outcome = self.attempt([message], lambda: [self._send_session(message)])[0]
        if outcome.accepted:
            return outcome
        if outcome.detail.get("twilio_code") != OUTSIDE_WINDOW:
            return _with_detail(outcome, whatsapp_mode="session")
        if not plan.content_sid:
            return _with_detail(
                outcome,
                error=f"{outcome.error} (no approved template to send instead)",
                whatsapp_mode="session",
            )
        return self._send_template(message, plan, fallback=outcome.error_code)

    def _send_session(self, message: OutboundMessage) -> SendResult:
        instance = self._create(message, self._session_params(message))
        return self._accepted(message, instance, {"whatsapp_mode": "session"})

    def _send_template(
        self, message: OutboundMessage, plan: WhatsAppPlan, *, fallback: str = ""
    ) -> SendResult:
        detail: dict[str, Any] = {"whatsapp_mode": "template", "content_sid": plan.content_sid}
        if fallback:
            detail["whatsapp_fallback"] = fallback

        def send() -> list[SendResult]:
            instance = self._create(message, self._template_params(message, plan))
            return [self._accepted(message, instance, dict(detail))]

        self.throttle()
        outcome = self.attempt([message], send)[0]
        return outcome if outcome.accepted else _with_detail(outcome, **detail)

    def _outside_window(self, message: OutboundMessage) -> SendResult:
        return SendResult(
            message_id=message.message_id,
            accepted=False,
            error=(
                "WhatsApp outside the 24-hour customer-care window takes only an approved "
                "template (ContentSid), and none was given"
            ),
            error_code=f"twilio:{OUTSIDE_WINDOW}",
            permanent=True,
            detail={"whatsapp_mode": "none", "twilio_code": OUTSIDE_WINDOW},
        )


def _with_detail(result: SendResult, *, error: str | None = None, **detail: Any) -> SendResult:
    """``result`` with more ``detail`` (and another ``error`` text, if given)."""
    return replace(
        result,
        error=result.error if error is None else error,
        detail={**result.detail, **detail},
    )
