import pytest

from journeys.models import Journey
from orchestrator.demo.services import load_demo

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_smoke(canvas_page):
    import time

    t = time.time()
    load_demo()
    print("demo", time.time() - t)
    j = Journey.objects.get(key="fitting-reminders")
    p = canvas_page.open_canvas(j)
    p.wait_for_timeout(1500)
    p.screenshot(path="/tmp/canvas1.png")
    print(p.page_errors)


def test_smoke2(canvas_page):
    load_demo()
    for key in ["shoe-replenishment", "first-snow"]:
        j = Journey.objects.get(key=key)
        p = canvas_page.open_canvas(j)
        p.wait_for_timeout(800)
        p.screenshot(path=f"/tmp/canvas-{key}.png")
    p.click('.react-flow__node[data-id="remind"]') if False else None
    j = Journey.objects.get(key="shoe-replenishment")
    p = canvas_page.open_canvas(j)
    p.click('.react-flow__node[data-id="week"]')
    p.wait_for_timeout(500)
    p.screenshot(path="/tmp/canvas-panel.png")
    print(p.page_errors)
