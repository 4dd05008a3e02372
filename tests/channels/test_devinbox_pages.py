"""The dev inbox pages: only with the devinbox adapter, escaped, staff-only outside DEBUG."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from channels.adapters import OutboundMessage
from channels.devinbox.adapter import DevInboxAdapter
from channels.devinbox.models import InboxMessage

pytestmark = pytest.mark.django_db

DEVINBOX = "channels.devinbox.adapter.DevInboxAdapter"


@pytest.fixture
def devinbox(settings):
    settings.DEBUG = True
    settings.CHANNEL_ADAPTERS = {
        channel: {"BACKEND": DEVINBOX} for channel in ("email", "sms", "whatsapp", "line")
    }


def _deliver(**fields) -> InboxMessage:
    message = OutboundMessage(
        **{"message_id": 41, "channel": "email", "to": "a@example.com", **fields}
    )
    [result] = DevInboxAdapter(alias=message.channel).send([message])
    return InboxMessage.objects.get(provider_message_id=result.provider_message_id)


def test_inbox_is_not_found_when_no_channel_uses_the_devinbox_adapter(client, settings):
    settings.DEBUG = True
    settings.CHANNEL_ADAPTERS = {"email": {"BACKEND": "channels.adapters.null.NullAdapter"}}
    assert client.get("/dev/inbox/").status_code == 404


def test_inbox_lists_newest_first_and_filters_by_channel(client, devinbox):
    _deliver(subject="First email", body="one")
    _deliver(message_id=42, channel="sms", to="+14155550100", body="Second, an SMS")

    page = client.get("/dev/inbox/").content.decode()
    assert page.index("Second, an SMS") < page.index("First email")

    only_sms = client.get("/dev/inbox/?channel=sms").content.decode()
    assert "Second, an SMS" in only_sms
    assert "First email" not in only_sms


def test_email_detail_shows_headers_sandboxed_html_and_text_part_escaped(client, devinbox):
    item = _deliver(
        subject="<b>Sale</b>",
        body="Plain <part>",
        html='<p onclick="x()">Hi & "bye"</p><script>alert(1)</script>',
        sender="Shop <shop@example.com>",
    )

    response = client.get(f"/dev/inbox/{item.pk}/")
    page = response.content.decode()

    assert "script-src" not in response["Content-Security-Policy"]
    assert "default-src 'none'" in response["Content-Security-Policy"]
    assert "&lt;b&gt;Sale&lt;/b&gt;" in page
    assert "Shop &lt;shop@example.com&gt;" in page
    assert "Plain &lt;part&gt;" in page
    assert "<script>alert(1)</script>" not in page
    assert 'sandbox srcdoc="&lt;p onclick=&quot;x()&quot;&gt;Hi &amp; &quot;bye&quot;' in page
    assert "/admin/delivery/message/41/change/" in page


def test_raw_html_is_served_as_a_sandboxed_document(client, devinbox):
    item = _deliver(subject="s", body="b", html="<p>Hi</p>")
    response = client.get(f"/dev/inbox/{item.pk}/raw.html")
    assert response.content == b"<p>Hi</p>"
    assert response["Content-Security-Policy"].startswith("sandbox;")


def test_sms_detail_shows_a_bubble_with_segment_count_and_encoding(client, devinbox):
    item = _deliver(channel="sms", to="+14155550100", body="a" * 161)
    page = client.get(f"/dev/inbox/{item.pk}/").content.decode()
    assert 'class="bubble sms"' in page
    assert "2 segments &middot; GSM-7 &middot; 161 characters" in page


def test_chat_detail_shows_a_chat_bubble(client, devinbox):
    item = _deliver(channel="line", to="U1234", body="Your table is ready")
    page = client.get(f"/dev/inbox/{item.pk}/").content.decode()
    assert 'class="phone chat line"' in page
    assert 'class="bubble chat-msg">Your table is ready<' in page


def test_outside_debug_the_inbox_is_for_staff_only(client, devinbox, settings):
    settings.DEBUG = False
    _deliver(subject="Private", body="x")
    response = client.get("/dev/inbox/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")

    staff = get_user_model().objects.create_user("ops", password="pw-ops-12345", is_staff=True)
    client.force_login(staff)
    assert "Private" in client.get("/dev/inbox/").content.decode()
