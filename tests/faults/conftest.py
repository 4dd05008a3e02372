"""Provider fault fixtures: the real adapters and SDKs against the emulator, a movable clock.

``wired`` configures Twilio SMS, SendGrid and LINE on one emulator; ``Provider`` names
what a test needs of each (channel, request path, how to read a request's recipient).
``drain`` moves the clock past every waiting message's next try and dispatches, until
nothing waits: the end state every accounting is taken from.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import time_machine
from django.utils import timezone

from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import Message, MessageStatus
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.emulator import ProviderEmulator
from tests.emulator import line as line_emulator
from tests.emulator import sendgrid as sendgrid_emulator
from tests.emulator import twilio as twilio_emulator
from tests.emulator.server import Received
from tests.faults.accounting import (
    Accounting,
    accepted_requests,
    duplicated,
    message_ids_on_the_wire,
    unsettled,
)

#: The adapters' read timeout in fault tests: a hang longer than this is "maybe sent".
TIMEOUT = 0.3
WAITING = (MessageStatus.QUEUED, MessageStatus.SCHEDULED, MessageStatus.DEFERRED)


def _form_to(request: Received) -> str:
    return (request.form().get("To") or [""])[0]


def _sendgrid_to(request: Received) -> str:
    try:
        return request.json()["personalizations"][0]["to"][0]["email"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def _line_to(request: Received) -> str:
    try:
        return request.json()["to"]
    except (ValueError, KeyError, TypeError):
        return ""


@dataclass(frozen=True)
class Provider:
    name: str
    channel: str
    path: str
    recipient: Callable[[Received], str]
    #: The customer field our message goes to on this channel.
    field: str

    def address(self, n: int) -> str:
        if self.channel == "sms":
            return f"+1415555{n:04d}"
        if self.channel == "email":
            return f"fault-{n}@example.com"
        return "U" + f"{n:032x}"

    def to(self, address: str) -> Callable[[Received], bool]:
        """A fault ``match``: only requests for this recipient."""
        return lambda request: self.recipient(request) == address


PROVIDERS = {
    "twilio": Provider("twilio", "sms", "/2010-04-01/", _form_to, "phone"),
    "sendgrid": Provider("sendgrid", "email", sendgrid_emulator.PATH, _sendgrid_to, "email"),
    "line": Provider("line", "line", line_emulator.PUSH_PATH, _line_to, "line_user_id"),
}


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request) -> Provider:
    return PROVIDERS[request.param]


@pytest.fixture
def emulator() -> Iterator[ProviderEmulator]:
    with ProviderEmulator() as server:
        twilio_emulator.install(server)
        sendgrid_emulator.install(server)
        line_emulator.install(server)
        yield server


@pytest.fixture(autouse=True)
def _no_provider_holds() -> Iterator[None]:
    """A provider's reset holds its sender in the shared store: never past a test."""
    from channels.adapters.ratelimit import clear_holds

    clear_holds()
    yield
    clear_holds()


def adapters(emulator: ProviderEmulator, **extra: dict) -> dict[str, dict]:
    return locmem_adapters() | {
        "sms": {
            "BACKEND": "channels.adapters.twilio_sms.TwilioSmsAdapter",
            "OPTIONS": {
                "account_sid": twilio_emulator.ACCOUNT_SID,
                "auth_token": twilio_emulator.AUTH_TOKEN,
                "from_number": "+15005550006",
                # Names our message id in every request (``?m=``); a reserved host the
                # emulator records callbacks for without calling it.
                "status_callback": "https://hooks.example/webhooks/twilio/status/",
                "base_url": emulator.url,
                "timeout": TIMEOUT,
                "concurrency": 1,
                **extra.get("sms", {}),
            },
        },
        "email": {
            "BACKEND": "channels.adapters.sendgrid.SendGridAdapter",
            "OPTIONS": {
                "api_key": "SG.test-key",
                "from_email": "Stride Running <hello@example.com>",
                "base_url": emulator.url,
                "timeout": TIMEOUT,
                "concurrency": 1,
                "max_personalizations": 1,
                **extra.get("email", {}),
            },
        },
        "line": {
            "BACKEND": "channels.adapters.line.LineAdapter",
            "OPTIONS": {
                "channel_access_token": line_emulator.CHANNEL_ACCESS_TOKEN,
                "base_url": emulator.url,
                "timeout": TIMEOUT,
                "concurrency": 1,
                **extra.get("line", {}),
            },
        },
    }


@pytest.fixture
def wired(settings, emulator) -> ProviderEmulator:
    settings.CHANNEL_ADAPTERS = adapters(emulator)
    return emulator


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    """The clock, running from a fixed noon UTC; tests move it with ``shift``."""
    with time_machine.travel(dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC), tick=True) as t:
        yield t


@pytest.fixture
def template():
    return make_template(
        topic=make_topic("receipts", kind="transactional"),
        variants={
            ("email", "en"): {"subject": "Your receipt", "body": "Hi {{ customer.first_name }}"},
            ("sms", "en"): {"body": "Hi {{ customer.first_name }}"},
            ("line", "en"): {"body": "Hi {{ customer.first_name }}"},
        },
    )


def customers(provider: Provider, n: int, start: int = 1) -> list:
    return [make_customer(**{provider.field: provider.address(i)}) for i in range(start, start + n)]


def waiting(ids) -> list[Message]:
    return list(Message.objects.filter(id__in=list(ids), status__in=WAITING))


def drain(clock: time_machine.Traveller, ids, *, rounds: int = 20) -> int:
    """Move the clock past the next try of every waiting message and dispatch, until
    none waits; returns the rounds it took."""
    for n in range(rounds):
        dispatcher.dispatch_due()
        left = waiting(ids)
        if not left:
            return n + 1
        latest = max(m.send_after for m in left)
        clock.move_to(max(latest, timezone.now()) + dt.timedelta(seconds=1))
    raise AssertionError(f"messages still waiting after {rounds} rounds: {waiting(ids)}")


def accounting(emulator: ProviderEmulator, provider: Provider, ids, **notes: int) -> Accounting:
    """What was accepted against what the provider received (its own request log)."""
    ids = list(ids)
    requests = emulator.requests_to(provider.path)
    taken = accepted_requests(requests)
    if provider.name == "line":
        # A push names no message id of ours: each message here goes to its own user.
        by_user = dict(
            Message.objects.filter(id__in=ids).values_list("to_address", "id").distinct()
        )
        on_wire = Counter(by_user[_line_to(r)] for r in taken if _line_to(r) in by_user)
    else:
        on_wire = message_ids_on_the_wire(taken)
    return Accounting(
        accepted=len(ids),
        provider_calls=len(requests),
        lost=unsettled(ids),
        duplicated=duplicated(on_wire),
        http_5xx=0,
        notes={"taken": sum(on_wire.values()), **notes},
    )


def body_json(request: Received) -> dict:
    return json.loads(request.body or b"{}")
