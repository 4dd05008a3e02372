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


def _frame(title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}" class="chart" style="max-width:100%">',
        f"<title>{escape(title)}</title>",
    ]


def _grid(left: int, right: int, top: int, plot_h: int, width: int, top_value: float) -> list[str]:
    """Three horizontal rules with their values: 0, half and the top of the scale."""
    parts = []
    for fraction in (0, 0.5, 1):
        y = top + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#ddd" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#555">{top_value * fraction:g}</text>'
        )
    return parts


def _legend(series: Sequence[Series], left: int, height: int) -> list[str]:
    parts = []
    legend_x = left
    for k, s in enumerate(series):
        parts.append(
            f'<rect x="{legend_x}" y="{height - 16}" width="10" height="10" '
            f'fill="{PALETTE[k % len(PALETTE)]}"/><text x="{legend_x + 14}" '
            f'y="{height - 7}" font-size="11" fill="#333">{escape(s.name)}</text>'
        )
        legend_x += 24 + 7 * len(s.name)
    return parts


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
    parts = _frame(title, width, height)
    parts += _grid(left, right, top, plot_h, width, top_value)
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
    parts += _legend(series, left, height)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label and value above is escaped


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    width: int = 720,
    height: int = 260,
) -> SafeString:
    """One line per series over the labels (days), with a point at each value."""
    left, right, top, bottom = 48, 12, 16, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(labels), 1)
    top_value = _nice_max(max((max(s.values, default=0) for s in series), default=0))
    step = plot_w / max(n - 1, 1)
    parts = _frame(title, width, height)
    parts += _grid(left, right, top, plot_h, width, top_value)
    for i, label in enumerate(labels):
        if n <= 16 or i % max(n // 12, 1) == 0:
            parts.append(
                f'<text x="{left + step * i:.1f}" y="{height - bottom + 16}" font-size="11" '
                f'text-anchor="middle" fill="#333">{escape(label)}</text>'
            )
    for k, s in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        points = [
            (left + step * i, top + plot_h - plot_h * value / top_value)
            for i, value in enumerate(s.values)
        ]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        for (x, y), label, value in zip(points, labels, s.values, strict=False):
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>'
                f"{escape(s.name)}, {escape(label)}: {value:g}</title></circle>"
            )
    parts += _legend(series, left, height)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label and value above is escaped


def funnel_chart(
    stages: Sequence[tuple[str, float]], *, title: str, width: int = 720
) -> SafeString:
    """Horizontal bars, one per stage, each with its count and share of the first."""
    row, label_w, right = 30, 200, 150
    height = row * max(len(stages), 1) + 10
    first = stages[0][1] if stages else 0
    widest = max((value for _label, value in stages), default=0) or 1
    plot_w = width - label_w - right
    parts = _frame(title, width, height)
    for i, (label, value) in enumerate(stages):
        y = 5 + row * i
        w = max(plot_w * value / widest, 1 if value else 0)
        share = f"{value / first:.1%}" if first else "—"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 18}" font-size="12" text-anchor="end" '
            f'fill="#333">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" '
            f'fill="{PALETTE[0]}"><title>{escape(label)}: {value:g} ({share})</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 18}" font-size="12" fill="#333">'
            f"{value:g} · {share}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label and value above is escaped
