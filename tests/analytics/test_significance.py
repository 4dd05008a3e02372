"""The A/B verdict: a two-sided two-proportion z-test, checked against worked values."""

from __future__ import annotations

import datetime as dt

import pytest

from orchestrator.analytics.selectors import RangeInvalid, compare, date_range, hold_group


def test_a_clear_difference_is_significant_and_names_the_better_arm():
    # 200/1000 against 260/1000: pooled z = 3.19, p = 0.0014.
    result = compare("A", (200, 1000), "B", (260, 1000))
    assert result.significant
    assert result.p_value == pytest.approx(0.00143, abs=0.00002)
    assert result.lift == pytest.approx(0.30)
    assert result.verdict.startswith("B converts better than A")


def test_the_baseline_can_be_the_better_arm():
    result = compare("A", (260, 1000), "B", (200, 1000))
    assert result.significant and result.verdict.startswith("A converts better than B")


def test_a_small_difference_is_not_significant_yet():
    result = compare("A", (20, 100), "B", (22, 100))
    assert not result.significant
    assert result.p_value == pytest.approx(0.728, abs=0.001)
    assert "No significant difference yet" in result.verdict


def test_too_few_customers_get_no_verdict():
    result = compare("A", (3, 10), "B", (9, 12))
    assert not result.significant and result.p_value is None
    assert "Too few" in result.verdict


def test_equal_arms_with_no_conversions_are_equal_not_an_error():
    result = compare("A", (0, 100), "B", (0, 100))
    assert not result.significant and result.p_value == 1.0


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("rule:daily-3", "frequency cap"),
        ("personal_cap", "frequency cap"),
        ("quiet_hours", "quiet hours"),
        ("consent:topic_opted_out", "consent"),
        ("paused", "paused by the customer"),
        ("defer", "other"),
    ],
)
def test_hold_codes_fall_into_the_reasons_marketers_read(code, group):
    assert hold_group(code) == group


def test_date_ranges():
    assert date_range("2026-11-01", "2026-11-30") == (dt.date(2026, 11, 1), dt.date(2026, 11, 30))
    start, end = date_range(None, "2026-11-30")
    assert (end - start).days == 29
    with pytest.raises(RangeInvalid, match="from: expected a date"):
        date_range("yesterday", None)
    with pytest.raises(RangeInvalid, match="on or before"):
        date_range("2026-12-01", "2026-11-01")
    with pytest.raises(RangeInvalid, match="at most 400 days"):
        date_range("2024-01-01", "2026-01-01")
