"""SendGrid substitutions: emails whose content differs only in the strings unique to
each recipient (``metadata["personal"]``: tracked links, unsubscribe and preference
links) share one ``POST /v3/mail/send``, the content templated with tags and each
personalization carrying its own strings; every recipient still gets exactly the
content it was rendered with. The emulator checks and applies substitutions as
SendGrid does."""

from __future__ import annotations

import html
import json
import random
import re
from typing import Any

import pytest

from channels.adapters.base import OutboundMessage
from channels.adapters.sendgrid_batching import (
    MAX_SUBSTITUTION_BYTES,
    substitution_bytes,
    templated,
)
from tests.channels.test_sendgrid_batching import _post, make_adapter
from tests.emulator import sendgrid as sendgrid_emulator
from tests.emulator.server import ProviderEmulator

PATH = sendgrid_emulator.PATH
BASE = "https://stride.example.com"


def links(n: int) -> dict[str, str]:
    """Message ``n``'s own links, as the dispatcher makes them."""
    return {
        "shoes": f"{BASE}/r/{n:x}.0.sig{n * 7919:x}",
        "socks": f"{BASE}/r/{n:x}.1.sig{n * 104729:x}",
        "unsubscribe": f"{BASE}/u/cust{n}.topic3.email.sig{n * 31:x}/",
        "preferences": f"{BASE}/p/cust{n}.sig{n * 17:x}/",
    }


def marketing(n: int, **fields: Any) -> OutboundMessage:
    """A marketing email whose text and HTML carry message ``n``'s own links."""
    own = links(n)
    values: dict[str, Any] = {
        "channel": "email",
        "to": f"runner{n}@example.org",
        "subject": "The spring sale starts today",
        "body": (
            f"Everything 20% off until Sunday.\nShoes: {own['shoes']}\nSocks: {own['socks']}\n"
            f"Unsubscribe: {own['unsubscribe']}\nPreferences: {own['preferences']}"
        ),
        "html": (
            f'<p>Everything <b>20% off</b>: <a href="{own["shoes"]}">shoes</a>, '
            f'<a href="{own["socks"]}">socks</a>, <a href="{own["shoes"]}">again</a>.</p>'
            f'<p><a href="{own["unsubscribe"]}">Unsubscribe</a> | '
            f'<a href="{own["preferences"]}">Preferences</a></p>'
        ),
        "headers": {
            "List-Unsubscribe": f"<{own['unsubscribe']}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "metadata": {"topic": "spring-sale", "personal": list(own.values())},
    }
    values.update(fields)
    return OutboundMessage(message_id=n, **values)


def content(message: OutboundMessage) -> list[dict[str, str]]:
    """The content blocks of ``message`` sent as it was rendered."""
    blocks = []
    if message.body:
        blocks.append({"type": "text/plain", "value": message.body})
    if message.html:
        blocks.append({"type": "text/html", "value": message.html})
    return blocks


def delivered(emulator: ProviderEmulator) -> dict[str, dict[str, Any]]:
    """What each recipient got (the mail as if sent alone), by message id."""
    return {
        q.payload["custom_args"]["message_id"]: q.payload
        for q in sendgrid_emulator.accepted(emulator)
    }


def assert_each_got_its_own(emulator: ProviderEmulator, batch: list[OutboundMessage]) -> None:
    mails = delivered(emulator)
    assert set(mails) == {str(m.message_id) for m in batch}
    for message in batch:
        mail = mails[str(message.message_id)]
        assert mail["content"] == content(message)
        assert mail["subject"] == message.subject
        assert mail["personalizations"][0]["to"] == [{"email": message.to}]
        assert mail["headers"] == message.headers


# --- grouping by substitution -----------------------------------------------------------


def test_content_differing_only_in_personal_links_is_one_request(emulator):
    batch = [marketing(n) for n in range(1, 6)]

    results = make_adapter(emulator).send(batch)

    assert all(r.accepted for r in results), [r.error for r in results]
    [request] = emulator.requests_to(PATH)
    body = request.json()
    assert len(body["personalizations"]) == 5
    assert body["subject"] == "The spring sale starts today"
    # The content is the template: no one's links in it, a tag where each was.
    text, html = (block["value"] for block in body["content"])
    assert text == (
        "Everything 20% off until Sunday.\nShoes: [%p0%]\nSocks: [%p1%]\n"
        "Unsubscribe: [%p2%]\nPreferences: [%p3%]"
    )
    assert html == (
        '<p>Everything <b>20% off</b>: <a href="[%p0%]">shoes</a>, '
        '<a href="[%p1%]">socks</a>, <a href="[%p0%]">again</a>.</p>'
        '<p><a href="[%p2%]">Unsubscribe</a> | <a href="[%p3%]">Preferences</a></p>'
    )
    for message, personalization in zip(batch, body["personalizations"], strict=True):
        own = links(message.message_id)
        assert personalization == {
            "to": [{"email": message.to}],
            "custom_args": {"message_id": str(message.message_id)},
            "headers": message.headers,
            "substitutions": {
                "[%p0%]": own["shoes"],
                "[%p1%]": own["socks"],
                "[%p2%]": own["unsubscribe"],
                "[%p3%]": own["preferences"],
            },
        }
    assert len({r.provider_message_id for r in results}) == 1
    assert all(r.detail["personalizations"] == 5 for r in results)
    # Each recipient got its own links, and the text exactly as rendered.
    assert_each_got_its_own(emulator, batch)


def test_tags_follow_the_content_not_the_order_of_the_list(emulator):
    batch = [marketing(n) for n in range(1, 4)]
    batch[1] = marketing(2, metadata={"personal": list(reversed(links(2).values()))})

    results = make_adapter(emulator).send(batch)

    assert all(r.accepted for r in results)
    [request] = emulator.requests_to(PATH)
    assert len(request.json()["personalizations"]) == 3
    assert_each_got_its_own(emulator, batch)


def test_a_message_alone_is_sent_as_rendered_without_substitutions(emulator):
    message = marketing(1)

    [result] = make_adapter(emulator).send([message])

    assert result.accepted
    [request] = emulator.requests_to(PATH)
    body = request.json()
    assert body["content"] == content(message)
    assert body["subject"] == message.subject
    assert body["personalizations"] == [{"to": [{"email": message.to}]}]
    assert "[%p" not in request.body.decode()
    assert make_adapter(emulator).build_payload(message) == body

    # max_personalizations=1: every message alone, each as rendered.
    emulator.reset()
    batch = [marketing(n) for n in range(2, 5)]
    results = make_adapter(emulator, max_personalizations=1).send(batch)
    assert all(r.accepted for r in results)
    requests = [r.json() for r in emulator.requests_to(PATH)]
    assert len(requests) == 3
    assert sorted(b["custom_args"]["message_id"] for b in requests) == ["2", "3", "4"]
    assert all("substitutions" not in json.dumps(b) for b in requests)
    assert {b["custom_args"]["message_id"]: b["content"] for b in requests} == {
        str(m.message_id): content(m) for m in batch
    }


def test_personal_strings_that_do_not_occur_are_left_out(emulator):
    # The preference link is listed but the template does not use it.
    batch = []
    for n in range(1, 4):
        own = links(n)
        batch.append(
            marketing(
                n,
                body=f"Sale! {own['shoes']} Unsubscribe: {own['unsubscribe']}",
                html=f'<a href="{own["shoes"]}">Shoes</a>',
            )
        )

    results = make_adapter(emulator).send(batch)

    assert all(r.accepted for r in results)
    [request] = emulator.requests_to(PATH)
    body = request.json()
    assert [block["value"] for block in body["content"]] == [
        "Sale! [%p0%] Unsubscribe: [%p1%]",
        '<a href="[%p0%]">Shoes</a>',
    ]
    assert [p["substitutions"] for p in body["personalizations"]] == [
        {"[%p0%]": links(n)["shoes"], "[%p1%]": links(n)["unsubscribe"]} for n in (1, 2, 3)
    ]
    assert_each_got_its_own(emulator, batch)


def test_identical_content_whose_personal_strings_do_not_occur_groups_without_substitutions(
    emulator,
):
    batch = [marketing(n, body="Everything 20% off.", html="<p>20% off</p>") for n in (1, 2, 3)]

    results = make_adapter(emulator).send(batch)

    assert all(r.accepted for r in results)
    [request] = emulator.requests_to(PATH)
    body = request.json()
    assert len(body["personalizations"]) == 3
    assert all("substitutions" not in p for p in body["personalizations"])
    assert_each_got_its_own(emulator, batch)


def test_personal_strings_containing_one_another_are_substituted_whole(emulator):
    # One link is a prefix of another, and the preference link holds the unsubscribe one.
    batch = []
    for n in range(1, 5):
        short = f"{BASE}/r/{n}"
        longer = f"{BASE}/r/{n}0"  # "…/r/1" is a prefix of "…/r/10"
        unsubscribe = f"{BASE}/u/{n}"
        preferences = f"{BASE}/u/{n}/preferences"
        batch.append(
            marketing(
                n,
                body=f"A {short} B {longer} C {preferences} D {unsubscribe} E {longer}{short}",
                html=(
                    f'<a href="{longer}">x</a><a href="{short}">y</a><a href="{preferences}">z</a>'
                ),
                metadata={"personal": [short, unsubscribe, longer, preferences]},
            )
        )

    results = make_adapter(emulator).send(batch)

    assert all(r.accepted for r in results)
    [request] = emulator.requests_to(PATH)
    body = request.json()
    assert [block["value"] for block in body["content"]] == [
        "A [%p0%] B [%p1%] C [%p2%] D [%p3%] E [%p1%][%p0%]",
        '<a href="[%p1%]">x</a><a href="[%p0%]">y</a><a href="[%p2%]">z</a>',
    ]
    assert body["personalizations"][0]["substitutions"] == {
        "[%p0%]": f"{BASE}/r/1",
        "[%p1%]": f"{BASE}/r/10",
        "[%p2%]": f"{BASE}/u/1/preferences",
        "[%p3%]": f"{BASE}/u/1",
    }
    assert_each_got_its_own(emulator, batch)


def test_an_html_escaped_personal_string_is_substituted_too(emulator):
    batch = []
    for n in range(1, 4):
        url = f"{BASE}/p?c={n}&t=sig{n}"
        batch.append(
            marketing(
                n,
                body=f"Preferences: {url}",
                html=f'<a href="{url.replace("&", "&amp;")}">Preferences</a>',
                metadata={"personal": [url]},
            )
        )

    results = make_adapter(emulator).send(batch)

    assert all(r.accepted for r in results)
    [request] = emulator.requests_to(PATH)
    body = request.json()
    assert [block["value"] for block in body["content"]] == [
        "Preferences: [%p0%]",
        '<a href="[%p1%]">Preferences</a>',
    ]
    assert_each_got_its_own(emulator, batch)


def test_subjects_differing_in_personal_strings_share_a_templated_subject(emulator):
    same = [marketing(n, subject=f"Code {links(n)['socks']}") for n in (1, 2)]

    results = make_adapter(emulator).send(same)

    assert all(r.accepted for r in results)
    [request] = emulator.requests_to(PATH)
    body = request.json()
    # The same subject once templated: the request's, with the tag the text uses.
    assert body["subject"] == "Code [%p1%]"
    assert all("subject" not in p for p in body["personalizations"])
    assert_each_got_its_own(emulator, same)


def test_subjects_differing_otherwise_are_each_personalizations_own(emulator):
    batch = [marketing(n, subject=f"Runner {n}: code {links(n)['socks']}") for n in (1, 2, 3)]

    results = make_adapter(emulator).send(batch)

    assert all(r.accepted for r in results)
    [request] = emulator.requests_to(PATH)
    body = request.json()
    assert "subject" not in body
    # As written: no tag, so substituting leaves it alone.
    assert [p["subject"] for p in body["personalizations"]] == [m.subject for m in batch]
    assert_each_got_its_own(emulator, batch)


# --- not grouped by substitution --------------------------------------------------------


def test_content_holding_a_tag_like_sequence_is_not_templated(emulator):
    batch = [
        marketing(n, body=marketing(n).body + "\nPromo code [%p0%] applies.") for n in (1, 2, 3)
    ]
    # In a header it would be as dangerous (SendGrid may substitute there).
    headers = {**marketing(4).headers, "X-Campaign": "[%promo%]"}
    batch.append(marketing(4, headers=headers))

    results = make_adapter(emulator).send(batch)

    assert all(r.accepted for r in results)
    requests = [r.json() for r in emulator.requests_to(PATH)]
    assert len(requests) == 4  # each message's content names its recipient: alone
    assert all("substitutions" not in json.dumps(b["personalizations"]) for b in requests)
    assert_each_got_its_own(emulator, batch)


def test_substitutions_over_the_limit_are_not_grouped(emulator):
    tag_bytes = len("[%p0%]")

    def padded(n: int, size: int) -> OutboundMessage:
        url = f"{BASE}/r/{n}/"
        url += "x" * (size - tag_bytes - len(url))
        return marketing(n, body=f"Shoes: {url}", html="", metadata={"personal": [url]})

    at_limit = [padded(n, MAX_SUBSTITUTION_BYTES) for n in (1, 2)]
    over = [padded(n, MAX_SUBSTITUTION_BYTES + 1) for n in (3, 4)]

    results = make_adapter(emulator).send(at_limit + over)

    assert all(r.accepted for r in results), [r.error for r in results]
    requests = [r.json() for r in emulator.requests_to(PATH)]
    sizes = sorted(len(b["personalizations"]) for b in requests)
    assert sizes == [1, 1, 2]
    [group] = [b for b in requests if len(b["personalizations"]) == 2]
    assert [p["custom_args"]["message_id"] for p in group["personalizations"]] == ["1", "2"]
    assert substitution_bytes(group["personalizations"][0]["substitutions"]) == 10_000
    # Alone (in either order: requests run concurrently), each as rendered.
    alone = {b["custom_args"]["message_id"]: b for b in requests if len(b["personalizations"]) == 1}
    assert {key: b["content"] for key, b in alone.items()} == {
        str(m.message_id): content(m) for m in over
    }
    assert_each_got_its_own(emulator, at_limit + over)


def test_multibyte_strings_count_in_bytes():
    url = f"{BASE}/r/ランナー"
    text = f"Hi {url}"
    result = templated([url], [text, "", "s"])
    assert result is not None
    assert substitution_bytes(result[1]) == len("[%p0%]") + len(url.encode())
    assert templated([url + "é" * 5000], [text + "é" * 5000, "", "s"]) is None  # 10,000+ bytes


# --- a refused group is sent again message by message, as rendered ----------------------


def test_a_refused_group_is_resent_alone_with_its_own_content(emulator):
    batch = [marketing(n) for n in range(1, 5)]
    # Passes our check; SendGrid's refuses it, and with it the whole request.
    batch[2] = marketing(3, to="runner3@localhost")

    results = make_adapter(emulator).send(batch)

    assert [r.accepted for r in results] == [True, True, False, True]
    assert results[2].detail["errors"][0]["field"] == "personalizations.0.to.0.email"
    requests = [r.json() for r in emulator.requests_to(PATH)]
    assert len(requests[0]["personalizations"]) == 4
    assert "substitutions" in requests[0]["personalizations"][0]
    assert len(requests) == 5
    for body in requests[1:]:
        [message] = [m for m in batch if str(m.message_id) == body["custom_args"]["message_id"]]
        assert body["content"] == content(message)
        assert body["personalizations"] == [{"to": [{"email": message.to}]}]
        assert "[%p" not in json.dumps(body)
    assert_each_got_its_own(emulator, [batch[i] for i in (0, 1, 3)])


# --- templating is exactly undone by substituting --------------------------------------


def _substitute(text: str, substitutions: dict[str, str]) -> str:
    return sendgrid_emulator._substituter(substitutions)(text) if substitutions else text


def _reference(strings: list[str], texts: list[str]) -> tuple[list[str], dict[str, str]] | None:
    """What ``templated`` should give, the slow way: a regex alternation, longest
    first, matches leftmost-longest; tags numbered as they first appear."""
    wanted = [s for s in strings if s]
    wanted = sorted(dict.fromkeys(wanted + [html.escape(s) for s in wanted]), key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, wanted)))
    tags: dict[str, str] = {}

    def tag(match: re.Match[str]) -> str:
        return tags.setdefault(match[0], f"[%p{len(tags)}%]")

    out = [pattern.sub(tag, text) for text in texts]
    return (out, {t: s for s, t in tags.items()}) if tags else None


@pytest.mark.parametrize("anchor", ["", "https://s.example/"])
def test_templating_round_trips_on_random_content(anchor):
    # With a long common prefix (links) the prefix is searched for; else each string.
    rng = random.Random(20240611)
    alphabet = "ab/:.&<>\"'xyz "
    for _ in range(2000):
        strings = [
            anchor + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
            for _ in range(rng.randint(1, 5))
        ]
        texts = []
        for _field in range(3):
            pieces = [anchor, *strings, *alphabet]
            parts = [rng.choice(pieces) for _ in range(rng.randint(0, 12))]
            texts.append("".join(parts))
        result = templated(strings, texts)
        assert result == _reference(strings, texts)
        if result is None:
            continue
        out, substitutions = result
        assert [_substitute(t, substitutions) for t in out] == texts
        assert set(substitutions.values()) <= {*strings, *map(html.escape, strings)}
        assert all(any(tag in t for t in out) for tag in substitutions)


def test_templating_cases():
    assert templated([], ["a", "b", "c"]) is None
    assert templated(["", 7, None], ["a", "b", "c"]) is None
    assert templated(["zzz"], ["a", "b", "c"]) is None
    assert templated(["a"], ["a [%p", "b", "c"]) is None
    assert templated(["a"], ["a", "b", "c"], ["x [%p0%]"]) is None
    assert templated(["a"], ["a", "b", "c"]) == (["[%p0%]", "b", "c"], {"[%p0%]": "a"})
    # Leftmost, then longest; without a long common prefix, and with one.
    assert templated(["ab", "abc", "bcd"], ["xabcd ab", "", "s"]) == (
        ["x[%p0%]d [%p1%]", "", "s"],
        {"[%p0%]": "abc", "[%p1%]": "ab"},
    )
    u = "https://s.example/"
    assert templated([u + "a", u + "ab", u], [f"{u}ab {u}a {u}", "", "s"]) == (
        ["[%p0%] [%p1%] [%p2%]", "", "s"],
        {"[%p0%]": u + "ab", "[%p1%]": u + "a", "[%p2%]": u},
    )


# --- the emulator checks and applies substitutions as SendGrid does ----------------------


def _mail(personalizations: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "personalizations": personalizations,
        "from": {"email": "hello@example.com"},
        "subject": "Hello [%p0%]",
        "content": [
            {"type": "text/plain", "value": "Go to [%p0%] or [%p1%]"},
            {"type": "text/html", "value": '<a href="[%p0%]">[%p1%]</a>'},
        ],
        **fields,
    }


@pytest.mark.parametrize(
    ("substitutions", "message"),
    [
        ({"[%p0%]": 5}, "string values"),
        ({"[%p0%]": "a", "[%p1%]": None}, "string values"),
        ({"[%p0%]": {"nested": "x"}}, "string values"),
        (["[%p0%]", "a"], "string values"),
        ("[%p0%]=a", "string values"),
        ({"[%p0%]": "x" * (10_000 - 6 + 1)}, "may not exceed 10000 bytes"),
    ],
)
def test_emulator_refuses_bad_substitutions(emulator, substitutions, message):
    body = _mail(
        [
            {"to": [{"email": "r1@example.org"}], "substitutions": {"[%p0%]": "one"}},
            {"to": [{"email": "r2@example.org"}], "substitutions": substitutions},
        ]
    )

    status, answer = _post(emulator, body)

    assert status == 400
    [error] = answer["errors"]
    assert error["field"] == "personalizations.1.substitutions"
    assert message in error["message"]
    assert sendgrid_emulator.accepted(emulator) == []


def test_emulator_takes_substitutions_up_to_the_limit(emulator):
    big = {"[%p0%]": "x" * (10_000 - 6)}
    status, _headers = _post(
        emulator, _mail([{"to": [{"email": "r1@example.org"}], "substitutions": big}])
    )
    assert status == 202


def test_emulator_applies_each_personalizations_substitutions(emulator):
    body = _mail(
        [
            {
                "to": [{"email": "r1@example.org"}],
                "substitutions": {"[%p0%]": "https://a/1", "[%p1%]": "[%p0%]"},
                "custom_args": {"message_id": "1", "link": "[%p0%]"},
            },
            {"to": [{"email": "r2@example.org"}], "substitutions": {"[%p0%]": "https://a/2"}},
            {"to": [{"email": "r3@example.org"}], "subject": "Own [%p0%]"},
        ]
    )

    status, _headers = _post(emulator, body)

    assert status == 202
    first, second, third = sendgrid_emulator.accepted(emulator)
    # One pass: a value is never searched for tags.
    assert first.payload["content"] == [
        {"type": "text/plain", "value": "Go to https://a/1 or [%p0%]"},
        {"type": "text/html", "value": '<a href="https://a/1">[%p0%]</a>'},
    ]
    assert first.payload["subject"] == "Hello https://a/1"
    assert first.payload["custom_args"] == {"message_id": "1", "link": "https://a/1"}
    assert second.payload["content"][0]["value"] == "Go to https://a/2 or [%p1%]"
    assert second.payload["subject"] == "Hello https://a/2"
    # No substitutions: the content as sent.
    assert third.payload["content"] == body["content"]
    assert third.payload["subject"] == "Own [%p0%]"
    assert first.request == body
