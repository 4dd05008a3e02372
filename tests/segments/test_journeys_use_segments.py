"""Journeys use saved segments: a segment-entry trigger names one, a branch asks
"is in segment" (one statement per segment for the engine's whole batch)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from journeys import engine
from journeys.enrollment import Candidate, enroll
from journeys.models import Enrollment, StepRun
from journeys.problems import DefinitionInvalid
from journeys.triggers import segment_entry
from orchestrator.segments.services import segment_save
from tests.delivery.factories import make_customer
from tests.journeys.conftest import make_journey, send

pytestmark = pytest.mark.django_db

VIPS = {"all": [{"type": "attribute", "name": "vip", "op": "eq", "value": True}]}


def test_a_segment_entry_journey_enrolls_who_enters_a_saved_segment(template):
    segment_save(key="vips", name="VIPs", conditions=VIPS)
    journey = make_journey(
        [send()], trigger={"kind": "segment", "segment": "vips", "enroll_existing": True}
    )
    make_customer("ann", attributes={"vip": True})
    make_customer("bob", attributes={"vip": False})
    assert segment_entry.sweep(journey) == 1
    assert list(Enrollment.objects.values_list("customer__external_id", flat=True)) == ["ann"]


def test_a_journey_naming_an_unknown_segment_is_refused(template):
    with pytest.raises(DefinitionInvalid, match="no saved segment 'ghosts'"):
        make_journey([send()], trigger={"kind": "segment", "segment": "ghosts"})
    branch = {
        "key": "b",
        "kind": "branch",
        "next": "",
        "alt_next": "",
        "config": {"conditions": [{"type": "segment", "segment": "ghosts"}]},
    }
    with pytest.raises(DefinitionInvalid, match="no saved segment 'ghosts'"):
        make_journey([branch], key="k2")


def test_a_branch_is_in_segment_is_one_query_for_the_batch(template):
    segment_save(key="vips", name="VIPs", conditions=VIPS)
    branch = {
        "key": "b",
        "kind": "branch",
        "next": "yes",
        "alt_next": "",
        "config": {"conditions": [{"type": "segment", "segment": "vips"}]},
    }
    journey = make_journey([branch, send("yes")], trigger={"kind": "manual"})
    customers = [make_customer(f"c{i}", attributes={"vip": i % 2 == 0}) for i in range(6)]
    enroll(journey, [Candidate(c.id, f"t:{c.id}", {}, None) for c in customers])
    with CaptureQueriesContext(connection) as queries:
        engine.advance_batch(batch_size=50)
    segment_queries = [q for q in queries if "c.id = ANY" in q["sql"]]
    assert len(segment_queries) == 1
    outcomes = dict(
        StepRun.objects.filter(step="b").values_list("enrollment__customer__external_id", "outcome")
    )
    assert outcomes == {"c0": "yes", "c1": "no", "c2": "yes", "c3": "no", "c4": "yes", "c5": "no"}
