"""SendGrid batching: messages that differ only in their personalization share one
``POST /v3/mail/send``; the emulator checks such requests as SendGrid does and
delivers each personalization as a mail of its own, whose events map back 1:1."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from channels.adapters.base import OutboundMessage
from channels.adapters.sendgrid import MAX_PERSONALIZATIONS, SendGridAdapter
from tests.emulator import sendgrid as sendgrid_emulator
from tests.emulator.server import ProviderEmulator

PATH = sendgrid_emulator.PATH


def make_adapter(emulator: ProviderEmulator, **options: Any) -> SendGridAdapter:
    config: dict[str, Any] = {
        "api_key": "SG.test-key",
        "from_email": "Stride Running <hello@example.com>",
        "base_url": emulator.url,
        "timeout": 2,
        "categories": ["marketing"],
    }
    config.update(options)
    return SendGridAdapter(alias="email", **config)


def broadcast(n: int, first_id: int = 1, **fields: Any) -> list[OutboundMessage]:
    """``n`` messages with the same content, each with its own recipient and
    one-click unsubscribe headers."""
    messages = []
    for i in range(n):
        message_id = first_id + i
        values: dict[str, Any] = {
            "channel": "email",
            "to": f"runner{message_id}@example.org",
            "subject": "The spring sale starts today",
            "body": "Everything 20% off until Sunday.",
            "html": "<p>Everything <b>20% off</b> until Sunday.</p>",
            "headers": {
                "List-Unsubscribe": f"<https://stride.example.com/u/tok{message_id}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        }
        values.update(fields)
        messages.append(OutboundMessage(message_id=message_id, **values))
    return messages


def outcome(result) -> tuple[bool, bool, bool]:
    return result.accepted, result.permanent, result.unknown


# --- grouping ------------------------------------------------------------------------


def test_identical_content_is_one_request_with_a_personalization_per_message(emulator):
    batch = broadcast(5)

    results = make_adapter(emulator).send(batch)

    [request] = emulator.requests_to(PATH)
    body = request.json()
    assert body["from"] == {"email": "hello@example.com", "name": "Stride Running"}
    assert body["subject"] == "The spring sale starts today"
    assert body["content"] == [
        {"type": "text/plain", "value": "Everything 20% off until Sunday."},
        {"type": "text/html", "value": "<p>Everything <b>20% off</b> until Sunday.</p>"},
    ]
    assert body["categories"] == ["marketing"]
    # Nothing per message at the top level: no custom_args, no headers.
    assert "custom_args" not in body and "headers" not in body
    assert body["personalizations"] == [
        {
            "to": [{"email": m.to}],
            "custom_args": {"message_id": str(m.message_id)},
            "headers": {
                "List-Unsubscribe": f"<https://stride.example.com/u/tok{m.message_id}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        }
        for m in batch
    ]

    assert [r.message_id for r in results] == [m.message_id for m in batch]
    assert all(outcome(r) == (True, False, False) for r in results)
    x_message_id = results[0].provider_message_id
    assert len(x_message_id) == 22
    assert {r.provider_message_id for r in results} == {x_message_id}
    assert all(r.detail == {"status": 202, "personalizations": 5} for r in results)

    # SendGrid delivers one mail per personalization, each with its own message id.
    queued = sendgrid_emulator.accepted(emulator)
    assert [(q.x_message_id, q.index) for q in queued] == [(x_message_id, i) for i in range(5)]
    mailed = {
        q.payload["custom_args"]["message_id"]: q.payload["personalizations"][0]["to"][0]["email"]
        for q in queued
    }
    assert mailed == {str(m.message_id): m.to for m in batch}
    assert queued[2].payload["headers"]["List-Unsubscribe"] == "<https://stride.example.com/u/tok3>"


def test_subjects_that_differ_go_into_each_personalization(emulator):
    batch = [
        OutboundMessage(**{**_fields(m), "subject": f"Runner {m.message_id}, the sale is on"})
        for m in broadcast(3)
    ]

    results = make_adapter(emulator).send(batch)

    [request] = emulator.requests_to(PATH)
    body = request.json()
    assert "subject" not in body
    assert [p["subject"] for p in body["personalizations"]] == [m.subject for m in batch]
    assert all(r.accepted for r in results)
    assert [q.payload["subject"] for q in sendgrid_emulator.accepted(emulator)] == [
        m.subject for m in batch
    ]


def test_different_content_or_sender_goes_in_separate_requests(emulator):
    same = broadcast(2, first_id=1)
    personalized = broadcast(2, first_id=10, body="Hi Aki, everything is 20% off.")
    other_sender = broadcast(2, first_id=20, sender="Stride Coach <coach@example.com>")
    batch = [same[0], personalized[0], other_sender[0], same[1], personalized[1]]
    batch += [other_sender[1]]

    results = make_adapter(emulator).send(batch)

    assert [r.message_id for r in results] == [m.message_id for m in batch]
    assert all(r.accepted for r in results)
    sizes = sorted(len(r.json()["personalizations"]) for r in emulator.requests_to(PATH))
    assert sizes == [2, 2, 2]
    by_id = {r.message_id: r.provider_message_id for r in results}
    assert by_id[1] == by_id[2] and by_id[10] == by_id[11] and by_id[20] == by_id[21]
    assert len({by_id[1], by_id[10], by_id[20]}) == 3


def test_personalized_content_is_one_request_per_message(emulator):
    batch = [
        OutboundMessage(
            message_id=i,
            channel="email",
            to=f"runner{i}@example.org",
            subject="Your plan",
            body=f"Hi runner {i}, week 1: three easy runs.",
        )
        for i in range(1, 5)
    ]
    results = make_adapter(emulator).send(batch)
    assert all(r.accepted for r in results)
    requests = emulator.requests_to(PATH)
    assert len(requests) == 4
    sent = {r.json()["custom_args"]["message_id"]: r.json()["personalizations"] for r in requests}
    assert sent == {str(m.message_id): [{"to": [{"email": m.to}]}] for m in batch}
    assert len({r.provider_message_id for r in results}) == 4


def test_max_personalizations_splits_a_large_broadcast(emulator):
    batch = broadcast(2500)

    results = make_adapter(emulator, concurrency=4).send(batch)

    assert all(r.accepted for r in results)
    assert [r.message_id for r in results] == list(range(1, 2501))
    sizes = sorted(len(r.json()["personalizations"]) for r in emulator.requests_to(PATH))
    assert sizes == [500, 1000, 1000]
    assert len({r.provider_message_id for r in results}) == 3
    assert len(sendgrid_emulator.accepted(emulator)) == 2500


def test_max_personalizations_option(emulator):
    results = make_adapter(emulator, max_personalizations=2).send(broadcast(5))
    assert all(r.accepted for r in results)
    sizes = sorted(len(r.json()["personalizations"]) for r in emulator.requests_to(PATH))
    assert sizes == [1, 2, 2]

    emulator.reset()
    results = make_adapter(emulator, max_personalizations=1).send(broadcast(3))
    assert all(r.accepted for r in results)
    requests = emulator.requests_to(PATH)
    assert len(requests) == 3
    # Alone, a message is sent exactly as before batching existed.
    assert all("custom_args" in r.json() and "headers" in r.json() for r in requests)

    assert make_adapter(emulator, max_personalizations=5000).max_personalizations == 1000
    assert make_adapter(emulator).max_personalizations == MAX_PERSONALIZATIONS == 1000


def test_a_recipient_appears_once_per_request(emulator):
    first, second, third = broadcast(3)
    again = OutboundMessage(**{**_fields(first), "message_id": 99, "to": "RUNNER1@example.org"})

    results = make_adapter(emulator).send([first, second, again, third])

    assert all(r.accepted for r in results), [r.error for r in results]
    requests = [r.json() for r in emulator.requests_to(PATH)]
    assert sorted(len(b["personalizations"]) for b in requests) == [1, 3]


def test_messages_sendgrid_would_refuse_are_not_grouped(emulator):
    good = broadcast(3)
    no_subject = OutboundMessage(**{**_fields(good[0]), "message_id": 50, "subject": ""})
    bad_header = OutboundMessage(
        **{**_fields(good[0]), "message_id": 51, "headers": {"X-Campaign": "a\r\nBcc: x@y.z"}}
    )

    results = make_adapter(emulator).send([good[0], no_subject, good[1], bad_header, good[2]])

    by_id = {r.message_id: r for r in results}
    assert all(by_id[m.message_id].accepted for m in good)
    assert by_id[50].error_code == "sendgrid:400" and "subject is required" in by_id[50].error
    assert by_id[51].error_code == "sendgrid:invalid_header"
    assert sorted(len(r.json()["personalizations"]) for r in emulator.requests_to(PATH)) == [1, 3]


# --- failures of a group --------------------------------------------------------------


def test_a_400_for_a_group_is_retried_message_by_message_to_isolate_the_bad_one(emulator):
    batch = broadcast(4)
    # Passes our check (an @, no space); SendGrid's address check refuses it.
    batch[2] = OutboundMessage(**{**_fields(batch[2]), "to": "runner3@localhost"})

    results = make_adapter(emulator).send(batch)

    assert [r.message_id for r in results] == [1, 2, 3, 4]
    bad = results[2]
    assert outcome(bad) == (False, True, False)
    assert bad.error_code == "sendgrid:400"
    assert bad.detail["errors"][0]["field"] == "personalizations.0.to.0.email"
    good = [results[i] for i in (0, 1, 3)]
    assert all(outcome(r) == (True, False, False) for r in good)
    # Each good one went alone, so each has an X-Message-Id of its own.
    assert len({r.provider_message_id for r in good}) == 3
    requests = [r.json() for r in emulator.requests_to(PATH)]
    assert [len(b["personalizations"]) for b in requests[:1]] == [4]
    assert len(requests) == 5
    assert len(sendgrid_emulator.accepted(emulator)) == 3


def test_a_400_naming_a_shared_part_fails_the_group_without_resending(emulator):
    emulator.fail_next(
        PATH,
        status=400,
        body={
            "errors": [
                {
                    "message": "The from address does not match a verified Sender Identity.",
                    "field": "from",
                    "help": None,
                }
            ]
        },
    )
    results = make_adapter(emulator).send(broadcast(3))

    assert all(outcome(r) == (False, True, False) for r in results)
    assert {r.error_code for r in results} == {"sendgrid:400"}
    assert all("verified Sender Identity" in r.error for r in results)
    assert results[0].detail["personalizations"] == 3
    assert len(emulator.requests_to(PATH)) == 1


def test_a_413_for_a_group_is_retried_message_by_message(emulator):
    emulator.fail_next(PATH, status=413, body={"errors": [{"message": "too large", "field": None}]})
    results = make_adapter(emulator).send(broadcast(3))
    assert all(r.accepted for r in results)
    assert len(emulator.requests_to(PATH)) == 4


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_answers_fail_the_whole_group_the_same_way(emulator, status):
    emulator.fail_next(PATH, status=status, body={"errors": [{"message": "later", "field": None}]})
    results = make_adapter(emulator).send(broadcast(3))

    assert all(outcome(r) == (False, False, False) for r in results)
    assert {r.error_code for r in results} == {f"sendgrid:{status}"}
    assert len(emulator.requests_to(PATH)) == 1  # never resent behind the caller's back


def test_a_timeout_makes_the_whole_group_unknown(emulator):
    # SendGrid answers only after 0.8 s, and then does queue the whole request.
    emulator.fail_next(PATH, timeout=True, delay=0.8)
    batch = broadcast(3)
    started = time.monotonic()
    results = make_adapter(emulator, timeout=0.3).send(batch)
    assert time.monotonic() - started < 0.7

    assert all(outcome(r) == (False, False, True) for r in results)
    assert {r.error_code for r in results} == {"sendgrid:timeout"}
    assert len(emulator.requests_to(PATH)) == 1
    deadline = time.monotonic() + 2
    while len(sendgrid_emulator.accepted(emulator)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Queued after all: the event webhook reconciles each by its own message id.
    assert sorted(
        q.payload["custom_args"]["message_id"] for q in sendgrid_emulator.accepted(emulator)
    ) == ["1", "2", "3"]


def test_unreachable_fails_the_whole_group_transiently():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = SendGridAdapter(
        alias="email",
        api_key="SG.test-key",
        from_email="hello@example.com",
        base_url=f"http://127.0.0.1:{port}",
        timeout=0.5,
    )
    results = adapter.send(broadcast(3))
    assert all(outcome(r) == (False, False, False) for r in results)
    assert {r.error_code for r in results} == {"sendgrid:unreachable"}


def test_sandbox_group_is_validated_and_not_queued(emulator):
    results = make_adapter(emulator, sandbox=True).send(broadcast(3))
    assert all(r.accepted for r in results)
    assert results[0].detail == {"status": 200, "sandbox": True, "personalizations": 3}
    assert sendgrid_emulator.accepted(emulator) == []


# --- the emulator checks multi-personalization requests as SendGrid does ----------------


def _post(emulator: ProviderEmulator, body: dict[str, Any]) -> tuple[int, Any]:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        emulator.url + PATH,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer SG.test-key", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _mail(personalizations: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "personalizations": personalizations,
        "from": {"email": "hello@example.com"},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "Hi"}],
        **fields,
    }


def _to(n: int, **fields: Any) -> dict[str, Any]:
    return {"to": [{"email": f"r{n}@example.org"}], **fields}


@pytest.mark.parametrize(
    ("personalizations", "fields", "field", "message"),
    [
        ([_to(i) for i in range(1001)], {}, "personalizations", "limited to 1000"),
        (
            [{"to": [{"email": f"r{i}.{j}@example.org"} for j in range(101)]} for i in range(10)],
            {},
            "personalizations",
            "1000 total recipients",
        ),
        (
            [_to(1), _to(2), {"to": [{"email": "R1@example.org"}]}],
            {},
            "personalizations.2.to.0.email",
            "only be included once",
        ),
        ([_to(1), {"subject": "x"}], {}, "personalizations.1.to", "to array is required"),
        ([_to(1), {"to": [{"email": "nobody"}]}], {}, "personalizations.1.to.0.email", "valid"),
        (
            [_to(1), _to(2, custom_args={"message_id": 7})],
            {},
            "personalizations.1.custom_args.message_id",
            "must be strings",
        ),
        ([_to(1), _to(2, headers={"X-N": 1})], {}, "personalizations.1.headers", "string values"),
        ([_to(1, subject="A"), _to(2)], {"subject": None}, "subject", "subject is required"),
        (
            [_to(1), _to(2, custom_args={"a": "x" * 6000})],
            {"custom_args": {"b": "y" * 5000}},
            "personalizations.1.custom_args",
            "10000 bytes",
        ),
    ],
)
def test_emulator_refuses_what_sendgrid_refuses(emulator, personalizations, fields, field, message):
    body = _mail(personalizations, **fields)
    if body.get("subject") is None:
        body.pop("subject")

    status, answer = _post(emulator, body)

    assert status == 400
    [error] = answer["errors"]
    assert error["field"] == field
    assert message in error["message"]
    assert sendgrid_emulator.accepted(emulator) == []


def test_emulator_delivers_each_personalization_as_a_mail_of_its_own(emulator):
    body = _mail(
        [
            _to(1, custom_args={"message_id": "1"}, headers={"List-Unsubscribe": "<u1>"}),
            _to(2, custom_args={"message_id": "2"}, subject="Hello, r2"),
        ],
        custom_args={"campaign": "spring", "message_id": "0"},
        headers={"X-Campaign": "spring", "List-Unsubscribe": "<u0>"},
    )
    status, headers = _post(emulator, body)

    assert status == 202
    first, second = sendgrid_emulator.accepted(emulator)
    assert first.x_message_id == second.x_message_id == headers["X-Message-Id"]
    assert (first.index, second.index) == (0, 1)
    assert first.request == body
    assert first.payload["personalizations"] == [body["personalizations"][0]]
    assert first.payload["subject"] == "Hello" and second.payload["subject"] == "Hello, r2"
    assert first.payload["custom_args"] == {"campaign": "spring", "message_id": "1"}
    assert first.payload["headers"] == {"X-Campaign": "spring", "List-Unsubscribe": "<u1>"}
    assert second.payload["headers"] == {"X-Campaign": "spring", "List-Unsubscribe": "<u0>"}
    events = [sendgrid_emulator.event(mail, "delivered") for mail in (first, second)]
    assert [e["email"] for e in events] == ["r1@example.org", "r2@example.org"]
    assert [e["message_id"] for e in events] == ["1", "2"]
    prefixes = {e["sg_message_id"].split(".")[0] for e in events}
    assert prefixes == {headers["X-Message-Id"]}
    assert events[0]["sg_message_id"] != events[1]["sg_message_id"]


def _fields(message: OutboundMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in OutboundMessage.__slots__}


# --- through the dispatcher and the event webhook -------------------------------------


@pytest.fixture
def sendgrid_wired(settings, live_server):
    from tests.delivery.factories import locmem_adapters

    with ProviderEmulator() as server:
        sendgrid_emulator.install(server)
        signer = sendgrid_emulator.EventSigner()
        settings.SENDGRID_WEBHOOK_PUBLIC_KEY = signer.public_key
        settings.CHANNEL_ADAPTERS = locmem_adapters() | {
            "email": {
                "BACKEND": "channels.adapters.sendgrid.SendGridAdapter",
                "OPTIONS": {
                    "api_key": "SG.test-key",
                    "from_email": "Stride Running <hello@example.com>",
                    "base_url": server.url,
                    "timeout": 2,
                },
            }
        }
        hook = sendgrid_emulator.post_events_to(
            server,
            f"{live_server.url}/webhooks/sendgrid/events/",
            signer,
            kinds=("processed", "delivered", "open"),
            outcomes={"gone@example.com": ("processed", "bounce")},
        )
        yield server, hook


@pytest.mark.django_db(transaction=True)
def test_events_for_a_batched_request_map_to_their_own_messages(sendgrid_wired):
    from channels.webhooks.processing import process_pending
    from orchestrator.consent.models import Suppression, address_hash
    from orchestrator.delivery import dispatcher
    from orchestrator.delivery.models import MessageStatus
    from tests.delivery.factories import make_customer, make_template, make_topic, queue

    server, hook = sendgrid_wired
    # A broadcast: the subject greets each customer, the text and HTML are the same.
    template = make_template(
        topic=make_topic("promos"),
        variants={
            ("email", "en"): {
                "subject": "{{ customer.first_name }}, the spring sale starts today",
                "body": "Everything 20% off until Sunday.",
                "html": "<p>Everything <b>20% off</b> until Sunday.</p>",
            }
        },
    )
    emails = ["alex@example.com", "gone@example.com", "sam@example.com"]
    messages = [queue(make_customer(email=address), template) for address in emails]

    dispatcher.dispatch_due()
    hook.wait()
    process_pending()

    [request] = server.requests_to(PATH)
    body = request.json()
    assert len(body["personalizations"]) == 3
    by_address = {p["to"][0]["email"]: p for p in body["personalizations"]}
    for message in messages:
        message.refresh_from_db()
        personalization = by_address[message.to_address]
        assert personalization["custom_args"] == {"message_id": str(message.id)}
        # Each customer's own one-click unsubscribe link, in their own personalization.
        assert personalization["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert len({p["headers"]["List-Unsubscribe"] for p in body["personalizations"]}) == 3

    alex, gone, sam = messages
    x_message_id = sendgrid_emulator.accepted(server)[0].x_message_id
    assert {m.provider_message_id for m in messages} == {x_message_id}
    assert (alex.status, gone.status, sam.status) == (
        MessageStatus.OPENED,
        MessageStatus.BOUNCED,
        MessageStatus.OPENED,
    )
    assert Suppression.objects.get().address_hash == address_hash("email", "gone@example.com")
    # Every event was taken, each into its own message's history and no other's.
    assert [status for status, _events in hook.posted] == [200, 200, 200]
    for message in messages:
        codes = sorted(message.history.exclude(code="").values_list("code", flat=True))
        posted = [e for _status, events in hook.posted for e in events]
        own = [e for e in posted if e["message_id"] == str(message.id)]
        assert {e["email"] for e in own} == {message.to_address}
        assert sorted(f"sendgrid:{e['event']}" for e in own) == [
            c for c in codes if c.startswith("sendgrid:")
        ]
