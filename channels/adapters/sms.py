"""SMS segment counting: how many billable parts a text becomes, and in which encoding.

Carriers bill and throttle per segment, not per message, so the count matters
for cost and for throughput limits. A message travels as GSM-7 (7-bit septets)
only if every character is in the GSM 03.38 basic or extension table; a single
other character - a Japanese kana, an emoji, even a non-breaking space pasted
from a word processor - switches the *whole* message to UCS-2, which cuts a
segment from 160 to 70 characters and so can more than double the cost.

Concatenated messages carry a user-data header (UDH) in each part, which is why
a multi-part message holds 153 septets / 67 UTF-16 units per part. Parts are
never split inside an escape sequence (GSM-7 extension characters take two
septets) or inside a surrogate pair (an emoji takes two UTF-16 units), so the
count is worked out by filling parts, not by dividing.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7 = "GSM-7"
UCS2 = "UCS-2"

# GSM 03.38 basic character set (the ESC code 0x1B is left out: it is not a character).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each is sent as ESC + code, so it costs two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE_LIMITS = {GSM7: 160, UCS2: 70}
PART_LIMITS = {GSM7: 153, UCS2: 67}


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    encoding: str
    segments: int
    #: Characters as a reader counts them (Unicode code points).
    characters: int
    #: What the limits are counted in: septets for GSM-7, UTF-16 code units for UCS-2.
    units: int

    def as_dict(self) -> dict[str, str | int]:
        return {
            "encoding": self.encoding,
            "segments": self.segments,
            "characters": self.characters,
            "units": self.units,
        }


def is_gsm7(text: str) -> bool:
    return _GSM7_ALL.issuperset(text)


_GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION


def _unit_cost(ch: str, encoding: str) -> int:
    if encoding == GSM7:
        return 2 if ch in GSM7_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1  # outside the BMP: a surrogate pair


def _double_units(text: str, encoding: str) -> int:
    """How many characters of ``text`` take two units (set and range checks in C first)."""
    if encoding == GSM7:
        if GSM7_BASIC.issuperset(text):
            return 0
        return sum(1 for ch in text if ch in GSM7_EXTENSION)
    if text.isascii() or max(text) <= "\uffff":
        return 0
    return sum(1 for ch in text if ord(ch) > 0xFFFF)


def segments(text: str) -> SegmentInfo:
    """Encoding and segment count of ``text`` as an SMS. An empty text has no segments."""
    encoding = GSM7 if is_gsm7(text) else UCS2
    units = len(text) + _double_units(text, encoding) if text else 0
    if units == 0:
        count = 0
    elif units <= SINGLE_LIMITS[encoding]:
        count = 1
    else:
        part_limit = PART_LIMITS[encoding]
        count, filled = 1, 0
        for ch in text:
            cost = _unit_cost(ch, encoding)
            if filled + cost > part_limit:  # a 2-unit character never straddles two parts
                count, filled = count + 1, 0
            filled += cost
    return SegmentInfo(encoding=encoding, segments=count, characters=len(text), units=units)
