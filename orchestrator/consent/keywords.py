"""Inbound keywords: STOP, START and HELP families as people type them, and our answers.

A keyword is a whole message of one word (Twilio's rule), compared after
normalizing what phones and habits add: case, surrounding spaces and quotes,
trailing punctuation, full-width letters (common with Japanese input methods)
and Japanese punctuation. "Stop." and a full-width "STOP!" are STOP; "stop
sending me shoes" is a reply, not a keyword. The answer to a keyword is in the
customer's language (English when we have none of theirs).
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


#: What we answer to each keyword, by language.
KEYWORD_REPLIES: dict[str, dict[str, str]] = {
    "en": {
        STOP: "{brand}: you will get no more marketing messages here. Reply START to undo.",
        START: "{brand}: you are subscribed again. Reply STOP to opt out, HELP for help.",
        HELP: "{brand}: reply STOP to opt out, START to opt back in. Manage your "
        "preferences from the link in any of our emails.",
    },
    "ja": {
        STOP: "【{brand}】今後このチャネルでのお知らせは配信されません。"
        "再開するには START と返信してください。",
        START: "【{brand}】配信を再開しました。停止するには STOP と返信してください。",
        HELP: "【{brand}】配信停止は STOP、再開は START と返信してください。",
    },
}


def keyword_reply(keyword: str, *, locale: str, brand: str) -> str:
    """Our answer to ``keyword`` for a customer of ``locale`` (``"ja-JP"``, ``""``)."""
    language = (locale or "en").split("-")[0]
    texts = KEYWORD_REPLIES.get(language, KEYWORD_REPLIES["en"])
    return texts[keyword].format(brand=brand)
