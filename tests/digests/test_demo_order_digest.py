"""The demo's order digest: a customer on a daily digest of order updates has three
status updates held, and the digest lists them in one message."""

from __future__ import annotations

import pytest
from django.utils import timezone

from orchestrator.delivery.digests import digests_build_due
from orchestrator.delivery.models import Digest, Message, MessageStatus
from orchestrator.demo.services import load_demo

pytestmark = pytest.mark.django_db


def test_the_demo_holds_order_updates_for_a_daily_digest_and_folds_them_into_one():
    load_demo()
    load_demo()  # run again: nothing more
    held = Message.objects.filter(
        template__key__in=["order-packed", "order-shipped", "order-out-for-delivery"]
    )
    assert held.count() == 3
    assert set(held.values_list("status", flat=True)) == {MessageStatus.HELD}
    digest = Digest.objects.get()
    assert digest.key == "topic:order-updates"
    Digest.objects.update(due_at=timezone.now())
    assert digests_build_due().folded == 3
    digest.refresh_from_db()
    assert digest.message.data["digest"]["count"] == 3
