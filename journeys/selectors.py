"""Reads of journeys for other apps: the series names customers read."""

from __future__ import annotations

from collections.abc import Iterable

from journeys.models import Journey


def series_names(keys: Iterable[str], language: str | None = None) -> dict[str, str]:
    """Journey key -> the name customers read in ``language`` (default: the active one).

    Messages carry only the journey's key, which is internal: this is what "why did I get
    this?" names the series by. One query; unknown keys are left out.
    """
    wanted = {k for k in keys if k}
    if not wanted:
        return {}
    journeys = Journey.objects.filter(key__in=wanted).only(
        "key", "name", "customer_name", "customer_names"
    )
    return {j.key: j.customer_name_in(language) for j in journeys}
