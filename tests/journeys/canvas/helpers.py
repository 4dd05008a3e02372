"""Driving the journey canvas as a marketer does: drag from the palette, fill the side panel."""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.sync_api import Locator, Page, expect

TRIGGER = "__trigger__"


def node(page: Page, key: str) -> Locator:
    return page.locator(f'.react-flow__node[data-id="{key}"]')


def edge(page: Page, edge_id: str) -> Locator:
    return page.locator(f'.react-flow__edge[data-id="{edge_id}"]')


def node_ids(page: Page) -> list[str]:
    return page.eval_on_selector_all(".react-flow__node", "els => els.map(e => e.dataset.id)")


def edge_ids(page: Page) -> list[str]:
    return sorted(
        page.eval_on_selector_all(".react-flow__edge", "els => els.map(e => e.dataset.id)")
    )


def settle(page: Page) -> None:
    """Wait until the canvas shows the current layout (no re-layout pending)."""
    page.wait_for_timeout(150)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.react-flow__node')].every("
        "n => n.dataset.id === '__trigger__' || n.style.transform !== 'translate(0px, 0px)')"
        " && (document.querySelectorAll('.react-flow__node').length < 2"
        " || document.querySelectorAll('.react-flow__edge').length > 0)"
    )
    page.wait_for_timeout(100)


def drop_on_pane(page: Page, kind: str) -> None:
    """Drag a palette item onto an empty spot of the canvas."""
    pane = page.locator(".react-flow__pane")
    box = pane.bounding_box()
    page.drag_and_drop(
        f'[data-testid="palette-{kind}"]',
        ".react-flow__pane",
        target_position={"x": box["width"] - 50, "y": box["height"] - 50},
    )
    settle(page)


def drop_on_node(page: Page, kind: str, key: str) -> None:
    page.drag_and_drop(f'[data-testid="palette-{kind}"]', f'.react-flow__node[data-id="{key}"]')
    settle(page)


def drop_on_edge(page: Page, kind: str, edge_id: str) -> None:
    """Drag a palette item onto the middle of an edge's drawn path."""
    point = page.evaluate(
        """id => {
            const edge = `.react-flow__edge[data-id="${id}"]`;
            const path = document.querySelector(`${edge} path.react-flow__edge-path`);
            const at = path.getPointAtLength(path.getTotalLength() / 2);
            const m = path.getScreenCTM();
            return {x: at.x * m.a + at.y * m.c + m.e, y: at.x * m.b + at.y * m.d + m.f};
        }""",
        edge_id,
    )
    source = page.locator(f'[data-testid="palette-{kind}"]').bounding_box()
    pane = page.locator(".react-flow__pane").bounding_box()
    page.drag_and_drop(
        f'[data-testid="palette-{kind}"]',
        ".react-flow__pane",
        source_position={"x": source["width"] / 2, "y": source["height"] / 2},
        target_position={"x": point["x"] - pane["x"], "y": point["y"] - pane["y"]},
    )
    settle(page)


def set_field(page: Page, name: str, value: Any) -> None:
    """Set a side panel control by its spec name, whatever control renders it."""
    control = page.locator(f'[data-testid="side-panel"] [name="{name}"]').first
    tag = control.evaluate("e => e.tagName.toLowerCase() + ':' + (e.type || '')")
    if tag.startswith("select"):
        control.select_option(str(value))
    elif tag.endswith(":checkbox"):
        control.set_checked(bool(value))
    else:
        control.fill(str(value))


def saved_state(page: Page) -> dict:
    """The canvas's state as the server has it now (state.json), read with the page's session."""
    return page.evaluate(
        """async () => {
            const urls = JSON.parse(document.getElementById('canvas-state').textContent).urls;
            const response = await fetch(urls.state, {credentials: 'same-origin'});
            if (!response.ok) throw new Error(`state.json answered ${response.status}`);
            return response.json();
        }"""
    )


def structure(definition: dict) -> dict:
    """A definition with step keys replaced by their position, so two journeys built with
    different step keys compare equal when their graphs and settings are the same."""
    index = {s["key"]: i for i, s in enumerate(definition["steps"])}

    def at(key):
        return index.get(key) if key else None

    steps = [
        {
            "kind": s["kind"],
            "label": s.get("label") or "",
            "next": at(s.get("next")),
            "alt_next": at(s.get("alt_next")),
            "config": {k: v for k, v in (s.get("config") or {}).items() if v not in (None, "")},
        }
        for s in definition["steps"]
    ]
    return {"steps": steps}


def d_numbers(d: str) -> list[float]:
    return [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", d)]


def dump(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)


def expect_status(page: Page, text: str) -> None:
    expect(page.get_by_test_id("status")).to_contain_text(text)


def laid_out(page: Page) -> dict:
    """The canvas's drawing in flow coordinates: each node's box and each edge's path."""
    return page.evaluate(
        """() => {
            const nodes = {};
            for (const n of document.querySelectorAll('.react-flow__node')) {
                const m = n.style.transform.match(/translate\\(([-\\d.]+)px, ([-\\d.]+)px\\)/);
                nodes[n.dataset.id] = {
                    x: Number(m[1]), y: Number(m[2]), w: n.offsetWidth, h: n.offsetHeight,
                };
            }
            const edges = {};
            for (const e of document.querySelectorAll('.react-flow__edge')) {
                const path = e.querySelector('path.react-flow__edge-path');
                edges[e.dataset.id] = path.getAttribute('d');
            }
            return {nodes, edges};
        }"""
    )


def polyline(d: str) -> list[tuple[float, float]]:
    """The points of an edge path made of M/L commands (how the canvas draws ELK's routes)."""
    assert re.fullmatch(r"[ML0-9eE.,\s-]+", d), f"not an orthogonal polyline: {d}"
    numbers = d_numbers(d)
    return list(zip(numbers[0::2], numbers[1::2], strict=True))


def segment_enters_box(a, b, box, margin: float = 1.0) -> bool:
    """Whether the segment a-b passes through the inside of box (shrunk by margin)."""
    x0, y0 = box["x"] + margin, box["y"] + margin
    x1, y1 = box["x"] + box["w"] - margin, box["y"] + box["h"] - margin
    # Liang-Barsky clipping of the segment against the rectangle.
    t0, t1 = 0.0, 1.0
    dx, dy = b[0] - a[0], b[1] - a[1]
    for p, q in ((-dx, a[0] - x0), (dx, x1 - a[0]), (-dy, a[1] - y0), (dy, y1 - a[1])):
        if p == 0:
            if q < 0:
                return False
        else:
            t = q / p
            if p < 0:
                t0 = max(t0, t)
            else:
                t1 = min(t1, t)
            if t0 > t1:
                return False
    return True


def image_difference(page: Page, actual: bytes, baseline: bytes) -> dict:
    """Compare two PNGs in the browser at a quarter of their size (so antialiasing and
    font hinting wash out): the mean difference per channel (0-255) and the share of
    cells that differ by more than 64."""
    import base64

    return page.evaluate(
        """async ([a, b]) => {
            async function pixels(data) {
                const img = new Image();
                img.src = 'data:image/png;base64,' + data;
                await img.decode();
                const w = Math.round(img.width / 4), h = Math.round(img.height / 4);
                const c = document.createElement('canvas');
                c.width = w; c.height = h;
                const ctx = c.getContext('2d');
                ctx.imageSmoothingQuality = 'high';
                ctx.drawImage(img, 0, 0, w, h);
                return {w, h, px: ctx.getImageData(0, 0, w, h).data};
            }
            const [x, y] = [await pixels(a), await pixels(b)];
            if (x.w !== y.w || x.h !== y.h) return {sameSize: false, mean: 255, changed: 1};
            let sum = 0, changed = 0;
            for (let i = 0; i < x.px.length; i += 4) {
                let cell = 0;
                for (let k = 0; k < 3; k++) {
                    const d = Math.abs(x.px[i + k] - y.px[i + k]);
                    sum += d;
                    cell = Math.max(cell, d);
                }
                if (cell > 64) changed += 1;
            }
            const cells = x.px.length / 4;
            return {sameSize: true, mean: sum / (cells * 3), changed: changed / cells};
        }""",
        [base64.b64encode(actual).decode(), base64.b64encode(baseline).decode()],
    )
