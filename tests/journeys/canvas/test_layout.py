"""The demo journeys on the canvas at 1280x800: ELK's routes never cross a step, every link
of the definition is drawn with its exit's label, and the page looks as it did (a loose
comparison with a committed screenshot, so font rendering cannot make it flaky).

Set CANVAS_SCREENSHOTS=update to write new baselines after an intended change."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

pytest.importorskip("playwright", reason="playwright is not installed - browser test skipped")

from playwright.sync_api import expect

from journeys.definition import EXITS
from journeys.models import Journey
from orchestrator.demo.services import demo_journeys, load_demo
from tests.journeys.canvas.helpers import (
    TRIGGER,
    image_difference,
    laid_out,
    polyline,
    segment_enters_box,
    settle,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).parent / "screenshots"
#: Mean difference per colour channel (0-255) and share of changed cells allowed, both
#: measured at a quarter of the size: a moved step or a missing edge exceeds them, a
#: font's antialiasing does not.
MAX_MEAN = 6.0
MAX_CHANGED = 0.02


def expected_edges(definition: dict) -> dict[str, str]:
    """Edge id -> the exit label the canvas must show on it."""
    out = {f"{TRIGGER}:next": ""}
    for step in definition["steps"]:
        labels = EXITS.get(step["kind"])
        for i, exit in enumerate(("next", "alt_next")):
            if step.get(exit):
                out[f"{step['key']}:{exit}"] = labels[i] if labels else ""
    return out


def test_demo_journeys_are_laid_out_without_an_edge_crossing_a_step(canvas_page):
    load_demo()
    update = os.environ.get("CANVAS_SCREENSHOTS") == "update"
    (SCREENSHOTS / "latest").mkdir(parents=True, exist_ok=True)
    checked = 0
    for definition in demo_journeys():
        journey = Journey.objects.get(key=definition["key"])
        page = canvas_page.open_canvas(journey)
        settle(page)
        drawing = laid_out(page)
        nodes, edges = drawing["nodes"], drawing["edges"]
        assert set(nodes) == {TRIGGER, *(s["key"] for s in definition["steps"])}
        wanted = expected_edges(definition)
        assert set(edges) == set(wanted), definition["key"]
        for edge_id, label in wanted.items():
            if label:
                expect(page.locator(f'[data-edge-id="{edge_id}"]')).to_contain_text(label)

        # No two steps overlap, and no edge passes through a step it does not join; its
        # own ends are touched only where it starts and ends.
        boxes = list(nodes.items())
        for i, (a, box_a) in enumerate(boxes):
            for b, box_b in boxes[i + 1 :]:
                apart = (
                    box_a["x"] + box_a["w"] <= box_b["x"]
                    or box_b["x"] + box_b["w"] <= box_a["x"]
                    or box_a["y"] + box_a["h"] <= box_b["y"]
                    or box_b["y"] + box_b["h"] <= box_a["y"]
                )
                assert apart, f"{definition['key']}: steps {a} and {b} overlap"
        for edge_id, d in edges.items():
            points = polyline(d)
            assert len(points) >= 2
            source, exit = edge_id.rsplit(":", 1)
            if source == TRIGGER:
                target = definition["steps"][0]["key"]
            else:
                target = next(s[exit] for s in definition["steps"] if s["key"] == source)
            for a, b in itertools.pairwise(points):
                for key, box in nodes.items():
                    if key in (source, target):
                        continue
                    assert not segment_enters_box(a, b, box), (
                        f"{definition['key']}: edge {edge_id} crosses step {key}: {d}"
                    )
            # Along its own steps only at its ends: it leaves the source's bottom edge
            # and arrives on the target's top edge.
            for a, b in itertools.pairwise(points[1:-1]):
                assert not segment_enters_box(a, b, nodes[source]), (edge_id, d)
                assert not segment_enters_box(a, b, nodes[target]), (edge_id, d)
            start, end = points[0], points[-1]
            assert abs(start[1] - (nodes[source]["y"] + nodes[source]["h"])) <= 1, (edge_id, d)
            assert abs(end[1] - nodes[target]["y"]) <= 12, (edge_id, d)  # the arrow's tip
            checked += 1

        # 1280x800: the whole journey is in view, nothing scrolls sideways.
        pane = page.locator(".react-flow").bounding_box()
        for key in nodes:
            box = page.locator(f'.react-flow__node[data-id="{key}"]').bounding_box()
            assert box["x"] >= pane["x"] - 1 and box["y"] >= pane["y"] - 1, key
            assert box["x"] + box["width"] <= pane["x"] + pane["width"] + 1, key
            assert box["y"] + box["height"] <= pane["y"] + pane["height"] + 1, key
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280
        for name in ("save-draft", "publish", "simulate", "undo", "redo", "diff", "versions"):
            expect(page.get_by_test_id(name)).to_be_in_viewport()

        shot = page.screenshot()
        (SCREENSHOTS / "latest" / f"{definition['key']}.png").write_bytes(shot)
        baseline = SCREENSHOTS / "baseline" / f"{definition['key']}.png"
        if update or not baseline.exists():
            baseline.parent.mkdir(parents=True, exist_ok=True)
            baseline.write_bytes(shot)
            if not update:
                pytest.fail(f"no baseline screenshot: wrote {baseline}; check and commit it")
        diff = image_difference(page, shot, baseline.read_bytes())
        print(f"screenshot {definition['key']}: {diff}")  # shown with -s and on failure
        assert diff["sameSize"], diff
        assert diff["mean"] <= MAX_MEAN and diff["changed"] <= MAX_CHANGED, (
            f"{definition['key']}: the canvas looks different from {baseline} ({diff}); "
            f"see {SCREENSHOTS / 'latest'}"
        )
    assert checked >= 10
    assert not canvas_page.page_errors
