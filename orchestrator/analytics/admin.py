"""The journey analytics page, the channel health page and the broadcast results pages of
the admin."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from journeys.models import Journey
from orchestrator.analytics.models import BroadcastResults, ChannelDay
from orchestrator.analytics.rollups import analytics_catch_up
from orchestrator.analytics.selectors import (
    COMPLAINT_THRESHOLDS,
    RangeInvalid,
    channel_health,
    date_range,
    journey_analytics,
)
from orchestrator.broadcasts.selectors import broadcast_progress, broadcast_results
from orchestrator.core.charts import Series, bar_chart, funnel_chart, line_chart


def _range(request: HttpRequest):
    """(start, end, problem) from ``?from=&to=``; the default range when they are bad."""
    try:
        start, end = date_range(request.GET.get("from"), request.GET.get("to"))
        return start, end, ""
    except RangeInvalid as exc:
        start, end = date_range(None, None)
        return start, end, str(exc)


def journey_analytics_view(model_admin, request: HttpRequest, journey: Journey):
    analytics_catch_up()
    start, end, problem = _range(request)
    figures = journey_analytics(journey, start, end)
    labels = [day.day.strftime("%m-%d") for day in figures.days]
    stages = [(f"{s.key} ({s.kind})" if s.kind else s.key, s.entered) for s in figures.steps]
    stages.append(("converted (goal)", figures.converted))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": f"Analytics: {journey.name}",
        "journey": journey,
        "figures": figures,
        "start": start,
        "end": end,
        "problem": problem,
        "time_zone": settings.ANALYTICS_TIME_ZONE,
        "funnel": funnel_chart(
            [("enrolled", figures.enrolled), *stages],
            title=f"Funnel of {journey.name}: customers entering each step, {start} to {end}",
        ),
        "series_chart": line_chart(
            labels,
            [
                Series("enrolled", [d.enrolled for d in figures.days]),
                Series("sent", [d.sent for d in figures.days]),
                Series("clicked", [d.clicked for d in figures.days]),
                Series("converted", [d.converted for d in figures.days]),
            ],
            title=f"{journey.name} per day, {start} to {end}",
        ),
        "holds_chart": bar_chart(
            list(figures.holds_by_group),
            [Series("held", list(figures.holds_by_group.values()))],
            title="Messages held, by reason",
            height=200,
        )
        if figures.holds
        else None,
    }
    return TemplateResponse(request, "admin/journeys/journey/analytics.html", context)


@admin.register(ChannelDay)
class ChannelHealthAdmin(admin.ModelAdmin):
    """The "Channel health" entry of the admin: one report page, not a list of rows."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        analytics_catch_up()
        start, end, problem = _range(request)
        report = channel_health(start, end)
        labels = [day.day.strftime("%m-%d") for day in report.days]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Channel health",
            "report": report,
            "start": start,
            "end": end,
            "problem": problem,
            "complaint_warn": COMPLAINT_THRESHOLDS[0],
            "complaint_bad": COMPLAINT_THRESHOLDS[1],
            "chart": bar_chart(
                labels,
                [
                    Series("delivered", [d.delivered for d in report.days]),
                    Series(
                        "sent, no delivery report",
                        [max(d.sent - d.delivered - d.failed, 0) for d in report.days],
                    ),
                    Series("failed", [d.failed for d in report.days]),
                ],
                title=f"Messages per day, {start} to {end}",
            ),
        }
        return TemplateResponse(request, "admin/analytics/channel_health.html", context)


@admin.register(BroadcastResults)
class BroadcastResultsAdmin(admin.ModelAdmin):
    """The "Broadcast results" entry: every broadcast, each with a results page that shows
    what the broadcast's own page shows (the broadcasts selectors, not a second count)."""

    list_display = ["name", "key", "status", "materialised_at", "results"]
    list_filter = ["status"]
    search_fields = ["key", "name"]
    ordering = ["-materialised_at", "-id"]

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("broadcasts.view_broadcast")

    def has_module_permission(self, request) -> bool:
        return request.user.has_module_perms("broadcasts")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Results")
    def results(self, obj: BroadcastResults) -> str:
        url = reverse("admin:analytics_broadcastresults_results", args=[obj.pk])
        return format_html('<a href="{}" class="results-link">Results</a>', url)

    def get_urls(self):
        return [
            path(
                "<int:pk>/results/",
                self.admin_site.admin_view(self.results_view),
                name="analytics_broadcastresults_results",
            ),
            *super().get_urls(),
        ]

    def results_view(self, request, pk: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        broadcast = get_object_or_404(BroadcastResults, pk=pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Broadcast results: {broadcast.name}",
            "broadcast": broadcast,
            "progress": broadcast_progress(broadcast),
            "results": broadcast_results(broadcast),
        }
        return TemplateResponse(request, "admin/analytics/broadcast_results.html", context)
