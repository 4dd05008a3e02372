from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def percent(value: float | None, digits: int = 1) -> str:
    """0.0123 -> "1.2%"; empty for None."""
    if value is None:
        return ""
    return f"{value * 100:.{int(digits)}f}%"
