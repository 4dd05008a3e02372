"""A STOP is about the number and our sender, not about one customer record.

Several customer records share a phone number. The person texts STOP to our Twilio
number: a signed inbound webhook posted over HTTP to our running server, processed
by the worker's code. From then on nothing but the one confirmation goes from that
sender to that number - marketing or transactional, to any record holding it, also
one created after the STOP - until START from the number to that sender. Twilio's
21610 (the carrier says the number stopped us) does the same. A STOP to another of
our numbers does not stop this one.

The provider calls are counted from the emulator's request log, not from our tables.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from channels.webhooks.processing import process_pending
from orchestrator.consent.models import ConsentRecord, Suppression, address_hash
from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import InboundMessage, Message, MessageStatus
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.delivery.factories import queue as message_queue
from tests.emulator import ProviderEmulator
from tests.emulator import twilio as twilio_emulator
from tests.emulator.server import wait_until
from tests.faults.accounting import (
    Accounting,
    duplicated,
    message_ids_on_the_wire,
    unsettled,
)

pytestmark = pytest.mark.django_db(transaction=True)

FROM = "+15005550006"
WHATSAPP_FROM = "+14155238886"
NUMBER = "+14155550177"
S = MessageStatus


def _twilio_options(emulator, server) -> dict:
    return {
        "account_sid": twilio_emulator.ACCOUNT_SID,
        "auth_token": twilio_emulator.AUTH_TOKEN,
        "base_url": emulator.url,
        "status_callback": f"{server.url}/webhooks/twilio/status/",
        "timeout": 2,
    }


@pytest.fixture
def wired(settings, live_server):
    with ProviderEmulator() as emulator:
        twilio_emulator.install(emulator)
        settings.TWILIO_AUTH_TOKEN = twilio_emulator.AUTH_TOKEN
        settings.WEBHOOK_BASE_URL = None
        settings.KEYWORD_CONFIRMATIONS = True
        options = _twilio_options(emulator, live_server)
        settings.CHANNEL_ADAPTERS = locmem_adapters() | {
            "sms": {
                "BACKEND": "channels.adapters.twilio_sms.TwilioSmsAdapter",
                "OPTIONS": options | {"from_number": FROM},
            },
            "whatsapp": {
                "BACKEND": "channels.adapters.twilio_whatsapp.TwilioWhatsAppAdapter",
                "OPTIONS": options | {"from_number": WHATSAPP_FROM},
            },
        }
        yield emulator, live_server


class Run:
    """One scenario's outbox and wire, for the accounting at the end."""

    def __init__(self, emulator, server, channel: str = "sms") -> None:
        self.emulator, self.server, self.channel = emulator, server, channel
        self.promos = make_topic("promos", channels=["sms", "whatsapp"])
        self.orders = make_topic("orders", kind="transactional", channels=["sms", "whatsapp"])
        self.marketing = make_template(
            topic=self.promos,
            variants={(c, "en"): {"body": "New trail shoes are in"} for c in ("sms", "whatsapp")},
        )
        self.receipt = make_template(
            topic=self.orders,
            variants={(c, "en"): {"body": "Your order shipped"} for c in ("sms", "whatsapp")},
        )
        self.accepted: list[int] = []

    def text(self, body: str, *, to: str | None = None) -> None:
        """The person texts ``body`` to our number; the worker processes it."""
        ours = to or (WHATSAPP_FROM if self.channel == "whatsapp" else FROM)
        status, _answer = twilio_emulator.send_inbound(
            self.emulator,
            url=f"{self.server.url}/webhooks/twilio/inbound/",
            from_=NUMBER,
            to=ours,
            body=body,
            channel=self.channel,
        )
        assert status == 200
        process_pending()

    def send_to_all(self, customers) -> list[Message]:
        """Marketing and a transactional message to every record, dispatched."""
        sent = [
            message_queue(customer, template, channel=self.channel, data={})
            for customer in customers
            for template in (self.marketing, self.receipt)
        ]
        self.accepted += [m.id for m in sent]
        self.dispatch()
        return sent

    def dispatch(self) -> None:
        dispatcher.dispatch_due(time_budget=5)
        twilio_emulator.wait_idle(self.emulator, timeout=5)
        process_pending()

    def calls(self) -> list[tuple[str, int | None]]:
        """(recipient, our message id) of every Messages API call the emulator received."""
        out = []
        for request in self.emulator.requests_to("/2010-04-01/"):
            if request.method != "POST" or "/Messages.json" not in request.path:
                continue
            form = request.form()
            to = form.get("To", [""])[0].removeprefix("whatsapp:")
            callback = form.get("StatusCallback", [""])[0]
            ids = parse_qs(urlsplit(callback).query).get("m")
            out.append((to, int(ids[0]) if ids else None))
        return out

    def accounting(self, *, after_opt_out: int, **notes: int) -> Accounting:
        confirmations = Message.objects.filter(template__key="keyword-reply")
        ids = self.accepted + list(confirmations.values_list("id", flat=True))
        on_the_wire = message_ids_on_the_wire(self.emulator.requests_to("/2010-04-01/"))
        return Accounting(
            accepted=len(ids),
            provider_calls=len(self.calls()),
            lost=unsettled(ids),
            duplicated=duplicated(on_the_wire),
            after_opt_out=after_opt_out,
            notes=notes,
        )


def statuses(messages) -> set[str]:
    return {m.status for m in Message.objects.filter(id__in=[m.id for m in messages])}


def confirmation_ids() -> list[int]:
    return list(
        Message.objects.filter(template__key="keyword-reply")
        .order_by("id")
        .values_list("id", flat=True)
    )


# "Stop." is not one of Twilio's own keywords, so Twilio (the emulator) keeps sending to
# the number and only our own block holds; after "STOP" it refuses (21610) as well.
@pytest.mark.parametrize(("records", "body"), [(2, "Stop."), (3, "Stop."), (2, "STOP")])
def test_stop_from_a_shared_number_stops_every_send_to_it_until_start(wired, records, body):
    emulator, server = wired
    run = Run(emulator, server)
    holders = [make_customer(phone=NUMBER) for _ in range(records)]

    run.text(body)
    run.dispatch()  # the confirmation
    [confirmation] = confirmation_ids()
    stopped_at = len(run.calls())
    assert run.calls()[-1] == (NUMBER, confirmation)

    # Marketing and transactional to every record, and to a record made after the STOP.
    later = make_customer(phone=NUMBER)
    held = run.send_to_all([*holders, later])
    assert statuses(held) == {S.SUPPRESSED}
    run.text("help")  # answered by nobody: the number stopped this sender
    run.dispatch()
    between = run.calls()[stopped_at:]

    # The ledger of every record that held the number records the STOP, and why.
    for customer in holders:
        [record] = ConsentRecord.objects.filter(customer=customer, action="opt_out")
        assert record.source == "inbound_keyword" and record.channel == "sms"
        assert record.evidence["sender"] == FROM
        assert record.evidence["address_hash"] == address_hash("sms", NUMBER)
        assert NUMBER not in str(record.evidence) and record.evidence["address"].endswith("0177")
        inbound = InboundMessage.objects.get(outcome="opted_out")
        assert record.evidence["inbound_message_id"] == inbound.provider_message_id

    run.text("START")
    started_at = len(run.calls())
    for customer in [*holders, later]:
        assert ConsentRecord.objects.filter(customer=customer, action="opt_in").count() == 1
    again = run.send_to_all([*holders, later])

    assert statuses(again) == {S.DELIVERED}
    after_start = [call for call in run.calls()[started_at:] if call[0] == NUMBER]
    assert len(after_start) == 2 * (records + 1) + 1  # every send, and START's confirmation
    run.accounting(
        after_opt_out=sum(1 for to, m in between if to == NUMBER and m != confirmation),
        records=records,
        confirmations=len(confirmation_ids()),
    ).assert_kept()


@pytest.mark.parametrize("body", ["stop", "Stop.", "\uff33\uff34\uff2f\uff30", "停止", "REVOKE"])
def test_every_stop_variant_stops_the_number_for_all_its_records(wired, body):
    emulator, server = wired
    run = Run(emulator, server)
    holders = [make_customer(phone=NUMBER) for _ in range(2)]

    run.text(body)
    run.text(body)  # said twice: still one confirmation
    run.dispatch()
    stopped_at = len(run.calls())
    held = run.send_to_all(holders)

    assert statuses(held) == {S.SUPPRESSED}
    assert len(confirmation_ids()) == 1
    assert ConsentRecord.objects.filter(action="opt_out", customer__in=holders).count() == 2
    run.accounting(
        after_opt_out=sum(1 for to, _m in run.calls()[stopped_at:] if to == NUMBER)
    ).assert_kept()


def test_help_is_answered_once(wired):
    emulator, server = wired
    run = Run(emulator, server)
    make_customer(phone=NUMBER)
    make_customer(phone=NUMBER)

    run.text("HELP")
    run.dispatch()

    [reply] = confirmation_ids()
    assert run.calls() == [(NUMBER, reply)]
    assert "STOP" in Message.objects.get(id=reply).data["text"]
    run.accounting(after_opt_out=0).assert_kept()


def test_a_stop_to_another_of_our_numbers_does_not_stop_this_one(wired):
    emulator, server = wired
    run = Run(emulator, server)
    holders = [make_customer(phone=NUMBER) for _ in range(2)]

    # 停止 is not one of Twilio's own keywords: the emulator keeps sending to the number.
    run.text("停止", to="+15005550010")
    run.dispatch()

    assert Suppression.objects.get().sender == "+15005550010"
    sent = run.send_to_all(holders)
    assert statuses(sent) == {S.DELIVERED}
    # Everything went from our one SMS sender, which the number did not stop: the sends,
    # and the confirmation (the channel has no other number to answer from).
    sms_from = {r.form()["From"][0] for r in emulator.requests_to("/2010-04-01/")}
    assert sms_from == {FROM}
    assert len(run.calls()) == len(sent) + 1
    run.accounting(after_opt_out=0).assert_kept()


def test_twilio_21610_stops_the_number_for_every_record_until_start(wired):
    emulator, server = wired
    run = Run(emulator, server)
    holders = [make_customer(phone=NUMBER) for _ in range(3)]
    # The person texted STOP to Twilio, which kept it: the carrier refuses us now.
    twilio_emulator.state(emulator).opted_out.add(NUMBER)

    [first] = [message_queue(holders[0], run.receipt, channel="sms", data={})]
    run.accepted.append(first.id)
    run.dispatch()
    refused_at = len(run.calls())
    first.refresh_from_db()
    assert first.status == S.FAILED and refused_at == 1

    stop = Suppression.objects.get()
    assert (stop.reason, stop.sender) == ("stop", FROM)
    for customer in holders:
        [record] = ConsentRecord.objects.filter(customer=customer, action="opt_out")
        assert record.source == "provider" and record.evidence["sender"] == FROM
        assert "21610" in record.evidence["provider_code"]
    held = run.send_to_all([*holders, make_customer(phone=NUMBER)])
    assert statuses(held) == {S.SUPPRESSED}
    after_refusal = sum(1 for to, _m in run.calls()[refused_at:] if to == NUMBER)

    run.text("START")
    run.dispatch()
    again = run.send_to_all(holders[:1])
    assert statuses(again) == {S.DELIVERED}
    run.accounting(after_opt_out=after_refusal).assert_kept()


def test_whatsapp_stop_stops_the_whatsapp_sender_for_every_record(wired):
    emulator, server = wired
    run = Run(emulator, server, channel="whatsapp")
    holders = [make_customer(phone=NUMBER, whatsapp=NUMBER) for _ in range(2)]

    run.text("STOP")
    run.dispatch()
    [confirmation] = confirmation_ids()
    assert Message.objects.get(id=confirmation).status in {S.DELIVERED, S.OPENED}
    stopped_at = len(run.calls())
    held = run.send_to_all([*holders, make_customer(whatsapp=NUMBER)])

    assert statuses(held) == {S.SUPPRESSED}
    stop = Suppression.objects.get()
    assert (stop.channel, stop.sender) == ("whatsapp", WHATSAPP_FROM)
    for customer in holders:
        [record] = ConsentRecord.objects.filter(customer=customer, action="opt_out")
        assert (record.channel, record.evidence["sender"]) == ("whatsapp", WHATSAPP_FROM)
    # SMS to the same number is another sender: it still goes.
    sms = message_queue(holders[0], run.receipt, channel="sms", data={})
    run.accepted.append(sms.id)
    run.dispatch()
    wait_until(lambda: Message.objects.get(id=sms.id).status == S.DELIVERED, timeout=5)
    after = [c for c in run.calls()[stopped_at:] if c[0] == NUMBER and c[1] != sms.id]
    run.accounting(after_opt_out=len(after)).assert_kept()
