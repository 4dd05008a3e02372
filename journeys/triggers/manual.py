"""Manual journeys: entered only through the API or a test send, never by a trigger.

Config (``Journey.trigger``): nothing. No sweep, no builder fields, and nothing to
forecast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms

from journeys.forecasting import Forecast, Window, nothing
from journeys.models import Journey
from journeys.problems import Problem

KIND = "manual"
LABEL = "Only by API or test send"
SWEEP_TASK = None
sweep = None
CONTEXT_FROM_EVENT = False
EXAMPLE: dict[str, Any] = {}
DEFAULTS: dict[str, Any] = {}
FORM_PLACES: dict[str, str] = {}
FIELDSETS: tuple = ()


def validate(trigger: Mapping[str, Any]) -> list[Problem]:
    return []


def form_fields() -> dict[str, forms.Field]:
    return {}


def form_initial(trigger: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def form_values(cleaned: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def forecast(journey: Journey, trigger: Mapping[str, Any], window: Window, sample: int) -> Forecast:
    return nothing(
        window, "This journey is entered only by API or test sends, so no entries are forecast."
    )
