"""The journeys' part of a customer's export and erasure (called by ``orchestrator.privacy``)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from journeys.models import Enrollment, ReplenishmentState, SegmentMember
from orchestrator.audience.models import Customer
from orchestrator.core.jsonable import iso


def journeys_export(customer: Customer) -> dict[str, Any]:
    """Every journey trip with its step log, segment memberships and re-purchase predictions."""
    enrollments = (
        Enrollment.objects.filter(customer=customer)
        .select_related("journey", "version")
        .prefetch_related("runs")
        .order_by("entered_at", "id")
    )
    return {
        "enrollments": [
            {
                "journey": e.journey.key,
                "version": e.version.number,
                "occurrence": e.occurrence,
                "status": e.status,
                "step": e.step,
                "arm": e.arm,
                "context": e.context,
                "entered_at": iso(e.entered_at),
                "due_at": iso(e.due_at),
                "finished_at": iso(e.finished_at),
                "exit_reason": e.exit_reason,
                "converted_at": iso(e.converted_at),
                "steps": [
                    {
                        "step": r.step,
                        "kind": r.kind,
                        "outcome": r.outcome,
                        "detail": r.detail,
                        "message_id": r.message_id,
                        "at": iso(r.at),
                    }
                    for r in e.runs.all()
                ],
            }
            for e in enrollments
        ],
        "segments": [
            {"journey": m.journey.key, "since": iso(m.since)}
            for m in SegmentMember.objects.filter(customer=customer).select_related("journey")
        ],
        "replenishment_predictions": [
            {
                "journey": r.journey.key,
                "product": r.product,
                "purchases": r.purchases,
                "last_purchase_at": iso(r.last_purchase_at),
                "median_interval_days": r.median_interval_days,
                "cycle_days": r.cycle_days,
                "basis": r.basis,
                "predicted_at": iso(r.predicted_at),
            }
            for r in ReplenishmentState.objects.filter(customer=customer).select_related("journey")
        ],
    }


def journeys_erase(customer: Customer) -> dict[str, int]:
    """Take the customer out of every journey they are on, before their rows are deleted.

    The lock waits for an engine tick that holds one of their enrollments (it claims
    with SKIP LOCKED) to commit, so no step runs for them halfway through the erasure;
    the exit also cancels what their journeys queued that has not gone.
    """
    from journeys.engine import enrollments_exit

    active = list(
        Enrollment.objects.select_for_update().filter(
            customer=customer, status=Enrollment.Status.ACTIVE
        )
    )
    enrollments_exit([(e, "the customer's data was erased") for e in active], now=timezone.now())
    return {"journeys.Enrollment exited": len(active)} if active else {}
