"""Admin pages beyond the model lists: the fatigue overview."""

from __future__ import annotations

from django.template.response import TemplateResponse

from orchestrator.core.charts import Series, bar_chart
from orchestrator.delivery.selectors import holds_by_day, messages_per_customer_week


def fatigue_overview(request, *, admin_site, days: int = 14) -> TemplateResponse:
    """Holds per rule per day, and the distribution of messages per customer per week."""
    holds = holds_by_day(days=days)
    labels = sorted(holds.by_reason, key=lambda label: -holds.totals[label])
    series = [
        Series(f"{label} ({kind})", values)
        for label in labels
        for kind, values in holds.by_reason[label].items()
        if any(values)
    ]
    short_days = [d[5:] for d in holds.days]  # MM-DD
    weekly = messages_per_customer_week()
    context = {
        **admin_site.each_context(request),
        "title": "Fatigue overview",
        "days": days,
        "holds": holds,
        "holds_totals": [(label, holds.totals[label]) for label in labels],
        "holds_chart": bar_chart(
            short_days, series, title=f"Messages held per day by reason, last {days} days"
        ),
        "hold_labels": [s.name for s in series],
        "holds_table": [(day, [s.values[i] for s in series]) for i, day in enumerate(holds.days)],
        "weekly": weekly,
        "weekly_rows": list(zip(weekly.buckets, weekly.customers, strict=True)),
        "weekly_chart": bar_chart(
            weekly.buckets,
            [Series("customers", weekly.customers)],
            title="Customers by number of messages received in the last 7 days",
        ),
    }
    return TemplateResponse(request, "admin/delivery/fatigue_overview.html", context)
