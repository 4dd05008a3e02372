"""Every endpoint needs a valid API key (401) carrying its scope (403)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from orchestrator.api.models import ApiKey
from tests.api.conftest import assert_error

ALL_SCOPES = set(ApiKey.Scope.values)

#: (method, path, the scope it needs)
ENDPOINTS = [
    ("post", "/api/v1/customers", "track"),
    ("post", "/api/v1/customers/bulk", "track"),
    ("get", "/api/v1/customers/alex", "read"),
    ("post", "/api/v1/events", "track"),
    ("post", "/api/v1/events/bulk", "track"),
    ("post", "/api/v1/messages", "send"),
    ("get", "/api/v1/messages/1", "read"),
    ("get", "/api/v1/topics", "admin"),
    ("post", "/api/v1/topics", "admin"),
    ("get", "/api/v1/topics/orders", "admin"),
    ("put", "/api/v1/topics/orders", "admin"),
    ("delete", "/api/v1/topics/orders", "admin"),
    ("get", "/api/v1/templates", "admin"),
    ("post", "/api/v1/templates", "admin"),
    ("get", "/api/v1/templates/order-shipped", "admin"),
    ("put", "/api/v1/templates/order-shipped", "admin"),
    ("delete", "/api/v1/templates/order-shipped", "admin"),
]

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
def test_request_without_a_key_is_refused_with_401(method, path, scope):
    response = getattr(APIClient(), method)(path, {}, format="json")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
def test_request_with_an_unknown_key_is_refused_with_401(method, path, scope):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer ok_not-a-real-key")
    assert_error(getattr(client, method)(path, {}, format="json"), 401, "authentication_failed")


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
def test_request_with_a_revoked_key_is_refused_with_401(method, path, scope, api_key_factory):
    raw = api_key_factory()
    ApiKey.objects.update(revoked_at="2025-01-01T00:00:00Z")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert_error(getattr(client, method)(path, {}, format="json"), 401, "authentication_failed")


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
def test_key_without_the_endpoints_scope_is_refused_with_403(method, path, scope, client_for):
    client = client_for(*sorted(ALL_SCOPES - {scope}))
    assert_error(getattr(client, method)(path, {}, format="json"), 403, "permission_denied")


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
def test_key_with_only_the_endpoints_scope_gets_past_authorization(method, path, scope, client_for):
    response = getattr(client_for(scope), method)(path, {}, format="json")
    # Not 401/403: the request reached the endpoint (which may still find it invalid).
    assert response.status_code not in (401, 403), response.content
