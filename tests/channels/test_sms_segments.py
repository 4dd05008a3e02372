"""SMS segment counting: GSM-7 160/153, UCS-2 70/67 in UTF-16 units, escapes never split."""

from __future__ import annotations

import pytest

from channels.adapters.sms import GSM7, UCS2, segments


@pytest.mark.parametrize(
    ("text", "encoding", "count"),
    [
        ("", GSM7, 0),
        ("a" * 160, GSM7, 1),
        ("a" * 161, GSM7, 2),
        ("a" * 306, GSM7, 2),
        ("a" * 307, GSM7, 3),
        ("あ" * 70, UCS2, 1),
        ("あ" * 71, UCS2, 2),
        ("あ" * 134, UCS2, 2),
        ("あ" * 135, UCS2, 3),
    ],
)
def test_segment_boundaries(text, encoding, count):
    info = segments(text)
    assert (info.encoding, info.segments) == (encoding, count)


def test_gsm_accented_and_greek_letters_stay_gsm7():
    info = segments("Café Ø Δ Ξ ¿qué? £5 @ñ")
    assert info.encoding == GSM7
    assert info.units == info.characters


def test_extension_characters_cost_two_septets():
    info = segments("€" * 80)
    assert (info.encoding, info.units, info.segments) == (GSM7, 160, 1)
    assert segments("€" * 80 + "a").segments == 2
    assert segments("{[]}|^~\\").units == 16


def test_extension_character_is_never_split_across_parts():
    # 152 septets then a 2-septet euro: it cannot start in part 1, so part 1 holds 152.
    text = "a" * 152 + "€" + "a" * 152
    assert segments(text).units == 306
    assert segments(text).segments == 3
    assert segments("a" * 151 + "€" + "a" * 153).segments == 2


def test_one_emoji_turns_the_whole_message_ucs2_and_counts_as_two_units():
    assert segments("a" * 69 + "😀").segments == 2  # 71 UTF-16 units
    info = segments("a" * 68 + "😀")
    assert (info.encoding, info.units, info.characters, info.segments) == (UCS2, 70, 69, 1)


def test_emoji_surrogate_pair_is_never_split_across_parts():
    # 66 units then an emoji: it moves whole to part 2.
    assert segments("a" * 66 + "😀" + "a" * 66).segments == 3
    assert segments("a" * 65 + "😀" + "a" * 67).segments == 2


def test_non_breaking_space_doubles_the_cost_of_an_otherwise_gsm_message():
    plain = "Your order has shipped and will arrive on Tuesday between 9am and 1pm. " * 2
    assert segments(plain).encoding == GSM7
    assert segments(plain).segments == 1
    with_nbsp = plain.replace(" ", "\u00a0", 1)
    assert segments(with_nbsp).encoding == UCS2
    assert segments(with_nbsp).segments == 3


def test_japanese_text_is_ucs2():
    info = segments("ご注文の商品を発送しました。")
    assert (info.encoding, info.segments, info.units) == (UCS2, 1, 14)
