"""Small server-rendered SVG charts for the admin: no JavaScript, no CDN, accessible.

Each chart carries a <title> and an aria-label, and the pages that use one also
show the numbers as a table, so the figures stay readable without the picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

#: Colour-blind-safe palette (Okabe-Ito), in series order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def bar_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    stacked: bool = True,
    width: int = 720,
    height: int = 260,
) -> SafeString:
    """Vertical bars per label; several series stack (or sit side by side)."""
    left, right, top, bottom = 48, 12, 16, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(labels), 1)
    if stacked:
        totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    else:
        totals = [max((s.values[i] for s in series), default=0) for i in range(len(labels))]
    top_value = _nice_max(max(totals, default=0))
    slot = plot_w / n
    bar_w = max(slot * 0.7 / (1 if stacked else max(len(series), 1)), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}" class="chart" style="max-width:100%">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        y = top + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#ddd" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#555">{top_value * fraction:g}</text>'
        )
    for i, label in enumerate(labels):
        x0 = left + slot * i + (slot - bar_w * (1 if stacked else len(series))) / 2
        base = 0.0
        for k, s in enumerate(series):
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top_value
            x = x0 if stacked else x0 + bar_w * k
            y = top + plot_h - h - (plot_h * base / top_value if stacked else 0)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(s.name)}, '
                f"{escape(label)}: {value:g}</title></rect>"
            )
            if stacked:
                base += value
        if n <= 16 or i % max(n // 12, 1) == 0:
            parts.append(
                f'<text x="{left + slot * i + slot / 2:.1f}" y="{height - bottom + 16}" '
                f'font-size="11" text-anchor="middle" fill="#333">{escape(label)}</text>'
            )
    legend_x = left
    for k, s in enumerate(series):
        parts.append(
            f'<rect x="{legend_x}" y="{height - 16}" width="10" height="10" '
            f'fill="{PALETTE[k % len(PALETTE)]}"/><text x="{legend_x + 14}" '
            f'y="{height - 7}" font-size="11" fill="#333">{escape(s.name)}</text>'
        )
        legend_x += 24 + 7 * len(s.name)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label and value above is escaped
