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
            const path = document.querySelector(`.react-flow__edge[data-id="${id}"] path.react-flow__edge-path`);
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
