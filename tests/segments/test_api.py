"""/api/v1/segments: segments as code, their count and members; every 4xx in the envelope."""

from __future__ import annotations

import pytest

from tests.delivery.factories import make_customer

pytestmark = pytest.mark.django_db

RUNNERS = {"all": [{"type": "attribute", "name": "sport", "op": "eq", "value": "running"}]}


def test_create_read_count_members_replace_delete(api):
    make_customer("ann", attributes={"sport": "running"})
    make_customer("bob", attributes={"sport": "running"}, phone="")
    make_customer("cat", attributes={"sport": "golf"})
    created = api.post(
        "/api/v1/segments",
        {"key": "runners", "name": "Runners", "conditions": RUNNERS},
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["summary"] == "sport is running"
    assert api.get("/api/v1/segments").json()["results"][0]["key"] == "runners"
    count = api.get("/api/v1/segments/runners/count").json()
    assert count == {
        "key": "runners",
        "size": 2,
        "reachable": {"email": 2, "sms": 1, "whatsapp": 0, "line": 0},
    }
    page = api.get("/api/v1/segments/runners/members?limit=1").json()
    assert [m["external_id"] for m in page["results"]] == ["ann"]
    golf = {"all": [{"type": "attribute", "name": "sport", "op": "eq", "value": "golf"}]}
    replaced = api.put(
        "/api/v1/segments/runners", {"name": "Golf", "conditions": golf}, format="json"
    )
    assert replaced.status_code == 200
    assert api.get("/api/v1/segments/runners/count").json()["size"] == 1
    assert api.delete("/api/v1/segments/runners").status_code == 204
    assert api.get("/api/v1/segments/runners").status_code == 404


def test_problems_are_400_fields_in_the_error_envelope(api):
    body = {
        "key": "bad",
        "name": "Bad",
        "conditions": {"all": [{"segment": "ghost"}, {"type": "event", "op": "happened"}]},
    }
    answer = api.post("/api/v1/segments", body, format="json")
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid"
    assert error["fields"]["conditions.all.0"] == ["There is no saved segment 'ghost'."]
    assert error["fields"]["conditions.all.1"] == ["Name the event (e.g. order.completed)."]
    assert api.post("/api/v1/segments", {"key": "x"}, format="json").json()["error"]["fields"]


def test_a_second_create_is_409_and_a_member_limit_out_of_range_is_400(api):
    body = {"key": "all", "name": "All", "conditions": {"all": []}}
    assert api.post("/api/v1/segments", body, format="json").status_code == 201
    again = api.post("/api/v1/segments", body, format="json")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "already_exists")
    assert api.get("/api/v1/segments/all/members?limit=0").status_code == 400


def test_reading_needs_read_and_writing_needs_admin(api_key_factory, client):
    reader = {"HTTP_AUTHORIZATION": f"Bearer {api_key_factory(scopes=('read',))}"}
    assert client.get("/api/v1/segments", **reader).status_code == 200
    refused = client.post(
        "/api/v1/segments", {"key": "a"}, content_type="application/json", **reader
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
