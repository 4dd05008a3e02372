"""Signed links to a customer's preference center.

A token is the customer id and a timestamp, signed with Django's signing (HMAC over
SECRET_KEY, salted for this purpose). It expires after PREFERENCE_LINK_MAX_AGE_DAYS.
Rotating SECRET_KEY keeps links that are already in inboxes working: put the old key
in SECRET_KEY_FALLBACKS, which Django's signing accepts until you remove it.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.core import signing
from django.urls import reverse

SALT = "orchestrator.preference-center"


def _signer() -> signing.TimestampSigner:
    # Built per call: SECRET_KEY_FALLBACKS is read when the signer is made.
    return signing.TimestampSigner(salt=SALT)


def preference_token(customer_id: int) -> str:
    return _signer().sign(str(customer_id))


def preference_customer_id(token: str) -> int | None:
    """The customer a token names, or None if it is altered, foreign or expired.

    Callers answer every None the same way, so a response never tells which it was.
    """
    max_age = settings.PREFERENCE_LINK_MAX_AGE_DAYS * 86400
    try:
        value = _signer().unsign(token, max_age=max_age)
    except (signing.BadSignature, ValueError):  # SignatureExpired is a BadSignature
        return None
    return int(value) if value.isdigit() else None


@functools.lru_cache(maxsize=1)
def _path_prefix() -> str:
    # Resolved once: reverse() costs about 100 us, too much to pay per message.
    return reverse("preference-center", args=["TOKEN"]).removesuffix("TOKEN/")


def preference_url(customer_id: int) -> str:
    """The absolute link for messages (``{{ preferences_url }}`` in templates)."""
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    return f"{base}{_path_prefix()}{preference_token(customer_id)}/"
