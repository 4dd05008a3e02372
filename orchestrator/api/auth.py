"""Bearer API keys with scopes. Keys are shown once and stored as SHA-256 hashes.

A key found valid is remembered by its hash in the process for ``API_KEY_CACHE_SECONDS``
(5 s unless configured): a busy client's requests do not each read the key's row.
Revoking a key therefore takes effect within that many seconds in every process, and
at once in the process that revoked it (``api_key_cache_clear``).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from orchestrator.api.models import ApiKey

KEY_PREFIX = "ok_"
#: Keys remembered at most; the cache starts again when full (one query per key then).
_CACHE_LIMIT = 1000
_cache: dict[str, tuple[float, ApiKey]] = {}
_cache_lock = threading.Lock()
#: The clock the cache expires by (tests move it).
_clock = time.monotonic


def cache_seconds() -> float:
    return float(getattr(settings, "API_KEY_CACHE_SECONDS", 5))


def api_key_cache_clear() -> None:
    """Forget every remembered key, e.g. after revoking one."""
    with _cache_lock:
        _cache.clear()


@receiver([post_save, post_delete], sender=ApiKey)
def _key_changed(sender, **kwargs) -> None:
    api_key_cache_clear()


def _valid_key(key_hash: str) -> ApiKey | None:
    """The unrevoked key with this hash, from the cache while it is fresh."""
    now = _clock()
    ttl = cache_seconds()
    entry = _cache.get(key_hash)
    if entry is not None and now - entry[0] < ttl:
        return entry[1]
    key = ApiKey.objects.filter(key_hash=key_hash, revoked_at__isnull=True).first()
    with _cache_lock:
        if key is None or ttl <= 0:
            _cache.pop(key_hash, None)
        else:
            if len(_cache) >= _CACHE_LIMIT:
                _cache.clear()
            _cache[key_hash] = (now, key)
    return key


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
        key = _valid_key(hash_key(token.strip()))
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        now = timezone.now()
        # Touch last_used_at at most once a minute: one write per request would be a hot row.
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
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
