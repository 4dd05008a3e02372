"""The public OpenAPI schema and docs, and the create_api_key command."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from orchestrator.api.models import ApiKey

pytestmark = pytest.mark.django_db

API_PATHS = [
    "/api/v1/customers",
    "/api/v1/customers/bulk",
    "/api/v1/customers/{external_id}",
    "/api/v1/events",
    "/api/v1/events/bulk",
    "/api/v1/messages",
    "/api/v1/messages/{id}",
    "/api/v1/topics",
    "/api/v1/topics/{key}",
    "/api/v1/templates",
    "/api/v1/templates/{key}",
]


def test_schema_is_public_and_lists_every_api_path():
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert set(API_PATHS) <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    send = schema["paths"]["/api/v1/messages"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in send["parameters"]]
    assert {"202", "400", "409", "413", "422"} <= set(send["responses"])


def test_interactive_docs_are_public():
    assert APIClient().get("/api/docs/").status_code == 200


def test_create_api_key_prints_a_key_that_works_once_with_its_scopes():
    out = io.StringIO()
    call_command(
        "create_api_key",
        "--name",
        "shop",
        "--scopes",
        "read,track",
        stdout=out,
        stderr=io.StringIO(),
    )
    raw = out.getvalue().strip()

    key = ApiKey.objects.get()
    assert (key.name, key.scopes) == ("shop", ["read", "track"])
    assert raw.startswith(key.prefix) and key.key_hash != raw
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/customers/nobody").status_code == 404  # authenticated, read
    assert client.get("/api/v1/topics").status_code == 403  # no admin scope


@pytest.mark.parametrize("scopes", ["read,superuser", "", " , "])
def test_create_api_key_refuses_unknown_or_missing_scopes(scopes):
    with pytest.raises(CommandError):
        call_command("create_api_key", "--name", "x", "--scopes", scopes, stderr=io.StringIO())
    assert not ApiKey.objects.exists()
