"""OpenAPI description of our authentication and of the answers every endpoint may give,
for drf-spectacular.

Views document what is theirs (their bodies, a 409 for a duplicate, a 422); the answers
that come from the plumbing rather than from the view are added here to every operation,
so the schema lists every status an operation can return: a malformed request (400),
no or a bad key (401), a key without the scope (403), a path naming nothing (404), a
body too large (413) or not JSON (415).
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema

_ERROR = {"$ref": "#/components/schemas/Error"}

_COMMON = {
    "400": "Malformed request: invalid JSON, a key given twice, wrong types, a bad header.",
    "401": "Missing or invalid API key.",
    "403": "The API key lacks the scope.",
}
_WITH_PATH = {"404": "Not found (the path names nothing)."}
_WITH_BODY = {
    "413": "The body exceeds the size limit.",
    "415": "The body is not JSON (Content-Type: application/json).",
}
_RETRY_AFTER = {
    "Retry-After": {
        "schema": {"type": "integer", "minimum": 1},
        "description": "Seconds to wait before retrying.",
        "required": True,
    }
}


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "orchestrator.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `manage.py create_api_key`; scopes: send, track, "
            "read, admin.",
        }


class ApiAutoSchema(AutoSchema):
    """Adds the statuses of the plumbing to every operation (see the module docstring)."""

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return operation
        responses = operation.setdefault("responses", {})
        added = dict(_COMMON)
        if any(p.get("in") == "path" for p in operation.get("parameters", [])):
            added |= _WITH_PATH
        if self.method in ("POST", "PUT", "PATCH"):
            added |= _WITH_BODY
        for code, description in added.items():
            responses.setdefault(
                code,
                {"content": {"application/json": {"schema": _ERROR}}, "description": description},
            )
        in_flight = responses.get("409")
        if in_flight is not None and any(
            p.get("name") == "Idempotency-Key" for p in operation.get("parameters", [])
        ):
            in_flight["headers"] = _RETRY_AFTER
        return operation
