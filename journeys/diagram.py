"""The journey diagram: a server-rendered SVG of a definition with live counts per step.

Pure functions over a definition dict (the format of ``journeys.definition``) and a
mapping of step key to counts, so the same code draws a draft, a published version or
an imported file. Steps are boxes laid out top-down by their distance from the entry
step; edges carry the meaning of each exit (yes/no, arm A/B, event/timeout). Every
text is escaped; there is no script and nothing is fetched, so the picture works in
the admin as it is and in a saved page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from journeys.models import StepKind
from orchestrator.segments import conditions

BOX_W, BOX_H = 230, 100
GAP_X, GAP_Y = 36, 70
MARGIN = 20
#: Room on the right for edges that loop back up.
LOOP_LANE = 48
END = "__end__"

#: Okabe-Ito colours (as in orchestrator.core.charts), one per step kind.
KIND_COLOURS = {
    StepKind.SEND: "#0072B2",
    # A digest sends too; the palette's spare yellow is unreadable as text on white.
    StepKind.DIGEST: "#0072B2",
    StepKind.WAIT: "#E69F00",
    StepKind.WAIT_FOR_EVENT: "#56B4E9",
    StepKind.BRANCH: "#CC79A7",
    StepKind.SPLIT: "#009E73",
    StepKind.UPDATE_ATTRIBUTE: "#D55E00",
    StepKind.WEBHOOK: "#000000",
    StepKind.EXIT: "#777777",
}
#: What each exit of a two-exit step means, as drawn on its edge.
EXIT_LABELS = {
    StepKind.WAIT_FOR_EVENT: ("event", "timeout"),
    StepKind.BRANCH: ("yes", "no"),
    StepKind.SPLIT: ("arm A", "arm B"),
}


class Counts(Protocol):
    entered: int
    waiting: int
    sent: int
    converted: int


@dataclass
class Node:
    key: str
    kind: str
    title: str
    summary: str
    row: int = 0
    col: int = 0
    x: float = 0
    y: float = 0
    reachable: bool = True


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    second: bool  # the alt_next exit


@dataclass
class Layout:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    width: float = 0
    height: float = 0


# --- words -----------------------------------------------------------------------------


def duration(minutes: Any) -> str:
    """``90`` -> ``1.5 h``; ``2880`` -> ``2 days``: the largest unit that reads well."""
    try:
        value = float(minutes)
    except (TypeError, ValueError):
        return "?"
    if value and value % 1440 == 0:
        days = value / 1440
        return f"{days:g} day" + ("" if days == 1 else "s")
    if value >= 60 and (value * 10) % 60 == 0:
        return f"{value / 60:g} h"
    return f"{value:g} min"


def _offset(minutes: Any) -> str:
    try:
        value = int(minutes or 0)
    except (TypeError, ValueError):
        return ""
    if value == 0:
        return ""
    return f" {duration(abs(value))} {'before' if value < 0 else 'after'}"


def summarize(step: Mapping[str, Any]) -> str:
    """One line saying what a step does, from its kind and settings."""
    kind = step.get("kind")
    config = step.get("config") or {}
    if kind == StepKind.SEND:
        channel = config.get("channel") or "preferred"
        channel = "preferred channel" if channel == "preferred" else channel
        fallback = config.get("fallback_channel")
        tail = f", else {fallback}" if fallback else ""
        return f"{config.get('template') or '(no template)'} by {channel}{tail}"
    if kind == StepKind.DIGEST:
        channel = config.get("channel") or "preferred"
        channel = "preferred channel" if channel == "preferred" else channel
        goes = []
        if config.get("window_minutes"):
            goes.append(f"after {duration(config['window_minutes'])}")
        if config.get("count"):
            goes.append(f"at {config['count']} messages")
        per = f" per {config['key']}" if config.get("key") else ""
        return (
            f"{config.get('template') or '(no template)'} by {channel}{per}, "
            f"{' or '.join(goes) or '(no window)'}"
        )
    if kind == StepKind.WAIT:
        mode = config.get("mode", "duration")
        if mode == "time_of_day":
            return f"until {config.get('time', '?')} local time"
        if mode == "until_date":
            return f"until {config.get('attribute', '?')}{_offset(config.get('offset_minutes'))}"
        return f"for {duration(config.get('minutes'))}"
    if kind == StepKind.WAIT_FOR_EVENT:
        return f"{config.get('event', '?')}, up to {duration(config.get('timeout_minutes'))}"
    if kind == StepKind.BRANCH:
        found = [c for c in config.get("conditions") or [] if isinstance(c, Mapping)]
        if not found:
            return "(no condition)"
        first = conditions.describe(found[0])
        more = len(found) - 1
        joiner = "or" if config.get("match") == "any" else "and"
        return first + (f" {joiner} {more} more" if more else "")
    if kind == StepKind.SPLIT:
        percent = config.get("percent")
        if isinstance(percent, int):
            return f"A {percent}% / B {100 - percent}%"
        return "(no share set)"
    if kind == StepKind.UPDATE_ATTRIBUTE:
        if config.get("from_context"):
            return f"set {config.get('name', '?')} from {config['from_context']}"
        return f"set {config.get('name', '?')} = {config.get('value', '')}"
    if kind == StepKind.WEBHOOK:
        return f"POST to {urlsplit(str(config.get('url', ''))).netloc or '?'}"
    if kind == StepKind.EXIT:
        return "leave the journey"
    return ""


KIND_NAMES = dict(StepKind.choices)
#: Short enough for the top line of a box.
KIND_SHORT = {
    StepKind.SEND: "send",
    StepKind.DIGEST: "digest",
    StepKind.WAIT: "wait",
    StepKind.WAIT_FOR_EVENT: "wait for event",
    StepKind.BRANCH: "branch",
    StepKind.SPLIT: "A/B split",
    StepKind.UPDATE_ATTRIBUTE: "update attribute",
    StepKind.WEBHOOK: "webhook",
    StepKind.EXIT: "exit",
}


# --- layout ----------------------------------------------------------------------------


def _exits(step: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, label, second) per exit; an empty target is the end of the journey."""
    kind = step.get("kind")
    if kind == StepKind.EXIT:
        return []
    if kind in EXIT_LABELS:
        first, second = EXIT_LABELS[kind]
        return [
            (step.get("next") or END, first, False),
            (step.get("alt_next") or END, second, True),
        ]
    return [(step.get("next") or END, "", False)]


def layout(definition: Mapping[str, Any]) -> Layout:
    steps = [s for s in definition.get("steps") or [] if isinstance(s, Mapping) and s.get("key")]
    out = Layout()
    if not steps:
        return out
    by_key = {s["key"]: s for s in steps}
    for s in steps:
        for target, label, second in _exits(s):
            if target == END or target in by_key:
                out.edges.append(Edge(s["key"], target, label, second))
    targets: dict[str, list[str]] = {}
    for edge in out.edges:
        targets.setdefault(edge.source, []).append(edge.target)
    # Rows by breadth-first distance from the entry step, in the order steps are met.
    depth = {steps[0]["key"]: 0}
    order = [steps[0]["key"]]
    for key in order:
        for target in targets.get(key, []):
            if target != END and target not in depth:
                depth[target] = depth[key] + 1
                order.append(target)
    last = max(depth.values())
    uses_end = any(e.target == END for e in out.edges)
    end_row = last + 1
    stray_row = end_row + 1 if uses_end else last + 1
    for s in steps:
        reachable = s["key"] in depth
        out.nodes[s["key"]] = Node(
            key=s["key"],
            kind=str(s.get("kind")),
            title=s.get("label") or s["key"],
            summary=summarize(s),
            row=depth.get(s["key"], stray_row),
            reachable=reachable,
        )
    if uses_end:
        out.nodes[END] = Node(key=END, kind="end", title="End of journey", summary="", row=end_row)
    rows: dict[int, list[Node]] = {}
    ordered = [out.nodes[k] for k in order]
    ordered += [n for n in out.nodes.values() if n.key not in depth]
    for node in ordered:
        rows.setdefault(node.row, []).append(node)
    widest = max(len(r) for r in rows.values())
    inner = widest * BOX_W + (widest - 1) * GAP_X
    loops = any(
        e.target != END and out.nodes[e.target].row <= out.nodes[e.source].row for e in out.edges
    )
    out.width = MARGIN * 2 + inner + (LOOP_LANE if loops else 0)
    for row, nodes in rows.items():
        span = len(nodes) * BOX_W + (len(nodes) - 1) * GAP_X
        left = MARGIN + (inner - span) / 2
        for col, node in enumerate(nodes):
            node.col = col
            node.x = left + col * (BOX_W + GAP_X)
            node.y = MARGIN + row * (BOX_H + GAP_Y)
    out.height = MARGIN * 2 + (max(rows) + 1) * (BOX_H + GAP_Y) - GAP_Y
    return out


# --- drawing ---------------------------------------------------------------------------


def _clip(text: str, limit: int = 34) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count_lines(counts: Counts | None) -> tuple[str, str]:
    c = counts
    return (
        f"entered {c.entered if c else 0} · waiting {c.waiting if c else 0}",
        f"sent {c.sent if c else 0} · converted {c.converted if c else 0}",
    )


def _edge_path(edge: Edge, nodes: Mapping[str, Node], width: float) -> tuple[str, float, float]:
    """The SVG path of an edge and where its label goes."""
    src, dst = nodes[edge.source], nodes[edge.target]
    two_exits = src.kind in EXIT_LABELS
    sx = src.x + BOX_W * ((0.7 if edge.second else 0.3) if two_exits else 0.5)
    sy = src.y + BOX_H
    if dst.row > src.row:
        tx, ty = dst.x + BOX_W / 2, dst.y
        if dst.key == END:
            ty = dst.y + BOX_H / 2 - 16  # the top of the "End" pill
        mid = (sy + ty) / 2
        path = f"M{sx:.1f},{sy:.1f} C{sx:.1f},{mid:.1f} {tx:.1f},{mid:.1f} {tx:.1f},{ty - 2:.1f}"
        return path, sx + (tx - sx) * 0.15, sy + 16
    # A loop back up (or sideways): down into the gap under the row (so it crosses no
    # box), along it to the lane on the right, up, and into the target's right side.
    lane = width - MARGIN / 2 - (LOOP_LANE / 2 if edge.second else 0)
    below = sy + GAP_Y * (0.6 if edge.second else 0.4)
    ty = dst.y + BOX_H * 0.5
    tx = dst.x + BOX_W
    path = f"M{sx:.1f},{sy:.1f} V{below:.1f} H{lane:.1f} V{ty:.1f} H{tx + 2:.1f}"
    return path, sx, sy + 16


def render(
    definition: Mapping[str, Any],
    counts: Mapping[str, Counts] | None = None,
    *,
    title: str = "Journey diagram",
) -> SafeString:
    """The diagram as inline SVG markup (safe: every text in it is escaped)."""
    counts = counts or {}
    plan = layout(definition)
    if not plan.nodes:
        return mark_safe('<p class="journey-diagram-empty"><em>No steps yet.</em></p>')
    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="journey-diagram" '
        f'viewBox="0 0 {plan.width:.0f} {plan.height:.0f}" width="{plan.width:.0f}" '
        f'role="img" aria-label="{escape(title)}" style="max-width:100%;height:auto" '
        f'font-family="system-ui, sans-serif">',
        f"<title>{escape(title)}</title>",
        '<defs><marker id="journey-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ]
    labels: list[str] = []
    for edge in plan.edges:
        path, lx, ly = _edge_path(edge, plan.nodes, plan.width)
        parts.append(
            f'<path class="edge" data-from="{escape(edge.source)}" '
            f'data-to="{escape(edge.target)}" d="{path}" fill="none" stroke="#555" '
            f'stroke-width="1.5" marker-end="url(#journey-arrow)"/>'
        )
        if edge.label:
            w = 7 * len(edge.label) + 8
            labels.append(
                f'<g class="edge-label"><rect x="{lx - w / 2:.1f}" y="{ly - 11:.1f}" '
                f'width="{w}" height="15" rx="3" fill="#fff" stroke="#bbb"/>'
                f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="11" text-anchor="middle" '
                f'fill="#222">{escape(edge.label)}</text></g>'
            )
    for node in plan.nodes.values():
        parts.append(_box(node, counts.get(node.key)))
    parts += labels  # over the boxes and edges, so none hides a label
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def _box(node: Node, counts: Counts | None) -> str:
    x, y = node.x, node.y
    if node.key == END:
        cx = x + BOX_W / 2
        return (
            f'<g class="end"><rect x="{cx - 60:.1f}" y="{y + BOX_H / 2 - 16:.1f}" width="120" '
            f'height="32" rx="16" fill="#eee" stroke="#777"/><text x="{cx:.1f}" '
            f'y="{y + BOX_H / 2 + 5:.1f}" font-size="13" text-anchor="middle" '
            f'fill="#333">End of journey</text></g>'
        )
    colour = KIND_COLOURS.get(node.kind, "#777777")
    kind_name = KIND_NAMES.get(node.kind, node.kind)
    first, second = _count_lines(counts)
    dash = "" if node.reachable else ' stroke-dasharray="6 4"'
    warning = "" if node.reachable else " (not reachable from the first step)"
    tooltip = f"{node.key}: {kind_name}. {node.summary}. {first}; {second}{warning}"

    def line(dy: float, body: str, *, size: int = 12, fill: str = "#222", bold=False) -> str:
        weight = ' font-weight="600"' if bold else ""
        return (
            f'<text x="{x + 10:.1f}" y="{y + dy:.1f}" font-size="{size}" fill="{fill}"'
            f"{weight}>{escape(body)}</text>"
        )

    return "".join(
        [
            f'<g class="step" data-step="{escape(node.key)}" data-kind="{escape(node.kind)}">',
            f"<title>{escape(tooltip)}</title>",
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="6" '
            f'fill="#fff" stroke="{colour}" stroke-width="2"{dash}/>',
            f'<rect x="{x:.1f}" y="{y:.1f}" width="6" height="{BOX_H}" rx="3" fill="{colour}"/>',
            line(17, KIND_SHORT.get(node.kind, node.kind).upper(), size=10, fill=colour, bold=True),
            line(35, _clip(node.title, 30), size=13, bold=True),
            line(53, _clip(node.summary or " ", 36), size=11, fill="#444"),
            line(74, first, size=11, fill="#222"),
            line(90, second, size=11, fill="#222"),
            "</g>",
        ]
    )


def legend_rows(
    definition: Mapping[str, Any], counts: Mapping[str, Counts] | None = None
) -> Sequence[tuple[str, str, str, int, int, int, int]]:
    """The diagram's figures as table rows (key, kind, summary, entered, waiting, sent,
    converted), so the numbers stay readable without the picture."""
    counts = counts or {}
    rows = []
    for s in definition.get("steps") or []:
        c = counts.get(s.get("key"))
        rows.append(
            (
                s.get("key"),
                KIND_NAMES.get(s.get("kind"), s.get("kind")),
                summarize(s),
                c.entered if c else 0,
                c.waiting if c else 0,
                c.sent if c else 0,
                c.converted if c else 0,
            )
        )
    return rows
