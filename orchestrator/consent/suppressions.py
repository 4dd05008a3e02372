"""Writes for suppressions: hard stops on an address, kept as a hash of it."""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.consent.models import Suppression, address_hash


def suppressions_add(entries: Iterable[tuple[str, str, str, str]]) -> int:
    """Suppress each ``(channel, address, reason, detail)``; an existing one is kept as is.

    Only the address's hash is stored. Returns how many were new. Call it inside the
    transaction that records why (a provider's refusal, a complaint), so both land or
    neither does.
    """
    rows = {
        (channel, address_hash(channel, address)): Suppression(
            channel=channel,
            address_hash=address_hash(channel, address),
            reason=reason,
            detail=detail[:500],
        )
        for channel, address, reason, detail in entries
        if address.strip()
    }
    if not rows:
        return 0
    existing = set(
        Suppression.objects.filter(
            address_hash__in=[h for _c, h in rows], channel__in={c for c, _h in rows}
        ).values_list("channel", "address_hash")
    )
    Suppression.objects.bulk_create(
        [row for key, row in rows.items() if key not in existing], ignore_conflicts=True
    )
    return len(rows.keys() - existing)
