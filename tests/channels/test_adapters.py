"""The simple adapters: frozen dataclasses in and out, one result per message, in order."""

from __future__ import annotations

import io

import pytest

from channels.adapters import OutboundMessage, get_adapter, locmem
from channels.adapters.console import ConsoleAdapter
from channels.adapters.null import NullAdapter
from channels.devinbox.adapter import DevInboxAdapter
from channels.devinbox.models import InboxMessage


def _batch(*addresses: str, channel: str = "sms", body: str = "Hello") -> list[OutboundMessage]:
    return [
        OutboundMessage(message_id=i, channel=channel, to=address, body=body)
        for i, address in enumerate(addresses, start=1)
    ]


def test_null_adapter_accepts_everything_with_unique_provider_ids():
    results = NullAdapter(alias="sms").send(_batch(*(f"+1415555{i:04d}" for i in range(500))))
    assert all(r.accepted for r in results)
    assert [r.message_id for r in results] == list(range(1, 501))
    assert len({r.provider_message_id for r in results}) == 500


def test_console_adapter_prints_each_message():
    stream = io.StringIO()
    adapter = ConsoleAdapter(alias="email", stream=stream)
    [result] = adapter.send(
        [
            OutboundMessage(
                message_id=7, channel="email", to="a@example.com", subject="Hi", body="Body text"
            )
        ]
    )
    assert result.accepted
    out = stream.getvalue()
    assert "email #7 to a@example.com" in out
    assert "Subject: Hi" in out
    assert "Body text" in out


def test_locmem_adapter_fails_configured_addresses_and_keeps_only_accepted_ones():
    locmem.clear()
    adapter = locmem.LocmemAdapter(
        alias="sms", fail={"+2": "permanent", "+3": "transient", "+4": "unknown"}
    )
    ok, permanent, transient, unknown = adapter.send(_batch("+1", "+2", "+3", "+4"))
    assert ok.accepted and ok.provider_message_id.startswith("locmem-")
    assert (permanent.accepted, permanent.permanent) == (False, True)
    assert (transient.accepted, transient.permanent, transient.unknown) == (False, False, False)
    assert (unknown.accepted, unknown.unknown) == (False, True)
    assert [m.to for m in locmem.outbox] == ["+1"]
    assert len(locmem.attempts) == 4
    locmem.clear()


def test_locmem_adapter_refuses_an_unknown_failure_mode():
    with pytest.raises(ValueError, match="expected one of"):
        locmem.LocmemAdapter(alias="sms", fail={"+1": "sometimes"})


def test_adapters_are_resolved_from_settings_and_reset_when_settings_change(settings):
    settings.CHANNEL_ADAPTERS = {"sms": {"BACKEND": "channels.adapters.null.NullAdapter"}}
    assert isinstance(get_adapter("sms"), NullAdapter)
    settings.CHANNEL_ADAPTERS = {"sms": {"BACKEND": "channels.adapters.locmem.LocmemAdapter"}}
    assert isinstance(get_adapter("sms"), locmem.LocmemAdapter)


@pytest.mark.django_db
def test_devinbox_adapter_stores_messages_with_sms_segments():
    adapter = DevInboxAdapter(alias="sms")
    results = adapter.send(_batch("+14155550100", "+14155550101", body="こんにちは"))
    assert all(r.accepted for r in results)
    rows = {row.message_ref: row for row in InboxMessage.objects.all()}
    assert set(rows) == {"1", "2"}
    assert rows["1"].meta["sms"] == {
        "encoding": "UCS-2",
        "segments": 1,
        "characters": 5,
        "units": 5,
    }
    assert rows["1"].provider_message_id == results[0].provider_message_id
