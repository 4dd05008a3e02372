"""Inbound keywords: STOP, START and HELP families, as people actually type them.

A keyword is a whole message of one word (Twilio's rule), compared after
normalizing what phones and habits add: case, surrounding spaces and quotes,
trailing punctuation, full-width letters (common with Japanese input methods)
and Japanese punctuation. "Stop." and a full-width "STOP!" are STOP; "stop
sending me shoes" is a reply, not a keyword.
"""

from __future__ import annotations

import unicodedata

STOP = "stop"
START = "start"
HELP = "help"

#: Twilio's default opt-out, opt-in and help keywords, plus Japanese equivalents.
KEYWORDS: dict[str, frozenset[str]] = {
    STOP: frozenset(
        {
            "stop",
            "stopall",
            "unsubscribe",
            "end",
            "quit",
            "cancel",
            "revoke",
            "optout",
            "opt-out",
            "停止",
            "配信停止",
            "解除",
            "配信解除",
            "登録解除",
        }
    ),
    START: frozenset({"start", "yes", "unstop", "開始", "再開", "配信再開", "配信開始"}),
    HELP: frozenset({"help", "info", "ヘルプ", "使い方"}),
}

_LOOKUP = {word: family for family, words in KEYWORDS.items() for word in words}
# Punctuation, quotes and brackets a keyword may come wrapped in, after NFKC has
# turned full-width forms into ASCII (Japanese brackets and stops have no ASCII form).
_STRIP = " \t\r\n.,!?;:'\"()[]<>「」『』。、・…~〜"


def normalize(text: str) -> str:
    """Full-width to ASCII (NFKC), case folded, wrapping punctuation and spaces removed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return folded.strip(_STRIP)


def classify(text: str) -> str:
    """``"stop"``, ``"start"``, ``"help"``, or ``""`` for an ordinary reply."""
    word = normalize(text)
    if not word or any(ch.isspace() for ch in word):
        return ""
    return _LOOKUP.get(word, "")
