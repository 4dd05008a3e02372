"""Bearer API keys with scopes. Keys are shown once and stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from orchestrator.api.models import ApiKey

KEY_PREFIX = "ok_"


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_key_create(*, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the raw key, which is never stored."""
    unknown = set(scopes) - set(ApiKey.Scope.values)
    if unknown or not scopes:
        allowed = ", ".join(ApiKey.Scope.values)
        raise ValueError(f"scopes must be a non-empty subset of {allowed}; got {sorted(scopes)}")
    body = secrets.token_urlsafe(32)
    raw = f"{KEY_PREFIX}{body}"
    key = ApiKey.objects.create(
        name=name,
        prefix=raw[: len(KEY_PREFIX) + 8],
        key_hash=hash_key(raw),
        scopes=sorted(set(scopes)),
    )
    return key, raw


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <api key>'.")
        try:
            key = ApiKey.objects.get(key_hash=hash_key(token.strip()), revoked_at__isnull=True)
        except ApiKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.") from None
        now = timezone.now()
        # Touch last_used_at at most once a minute: one write per request would be a hot row.
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return (None, key)

    def authenticate_header(self, request) -> str:
        return self.keyword


class HasScope(permissions.BasePermission):
    """Views declare ``required_scopes`` (all needed) or a per-method dict of them."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request, view) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            raise exceptions.NotAuthenticated(
                "Missing API key: send 'Authorization: Bearer <key>'."
            )
        required = getattr(view, "required_scopes", None)
        if isinstance(required, dict):
            required = required.get(request.method, required.get("*", ()))
        if required is None:
            return False
        needed = set(required)
        if needed - set(key.scopes):
            self.message = f"This API key lacks the scope(s): {', '.join(sorted(needed))}."
            return False
        return True
