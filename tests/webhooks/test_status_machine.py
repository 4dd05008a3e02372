"""One status machine for provider reports, clicks and replies: forward only, and our
own final decisions never move."""

from __future__ import annotations

from orchestrator.consent.keywords import HELP, STOP, keyword_reply
from orchestrator.delivery.models import MessageStatus as S
from orchestrator.delivery.status import may_move, sent_statuses_below


def test_reports_only_move_forward():
    assert may_move(S.SENT, S.DELIVERED)
    assert not may_move(S.DELIVERED, S.SENT)
    assert not may_move(S.DELIVERED, S.BOUNCED)  # outcomes of one step do not replace each other
    assert not may_move(S.OPENED, None)


def test_our_final_decisions_never_move():
    for final in (S.SUPPRESSED, S.CANCELED, S.EXPIRED):
        assert not may_move(final, S.REPLIED)


def test_a_click_moves_only_messages_the_provider_took():
    assert sent_statuses_below(S.CLICKED) == (
        S.SENT,
        S.DELIVERED,
        S.UNDELIVERED,
        S.BOUNCED,
        S.FAILED,
        S.OPENED,
    )


def test_keyword_replies_are_in_the_customer_s_language():
    assert keyword_reply(STOP, locale="ja-JP", brand="Stride").startswith("【Stride】")
    assert keyword_reply(HELP, locale="fr", brand="Stride").startswith("Stride: reply STOP")
