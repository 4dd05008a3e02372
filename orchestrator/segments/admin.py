"""The segment page: a condition editor in a marketer's words, a live count while
editing (``count/``, JSON), and the size over time."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import path, reverse

from orchestrator.consent.models import Topic
from orchestrator.core.charts import Series, line_chart
from orchestrator.delivery.models import MessageTemplate
from orchestrator.segments.models import Segment
from orchestrator.segments.selectors import (
    segment_count,
    segment_problems,
    segment_sample,
    segment_sizes,
)
from orchestrator.segments.services import segment_save
from orchestrator.segments.tree import CHANNELS, describe

#: Largest conditions document the live count accepts.
MAX_BODY = 100_000


class SegmentForm(forms.ModelForm):
    conditions = forms.JSONField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Segment
        fields = ("name", "key", "description", "conditions")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        tree = data.get("conditions") or {"all": []}
        self.problems = segment_problems(tree, key=data.get("key"))
        if self.problems:
            raise forms.ValidationError("The conditions have problems: see the rows marked.")
        data["conditions"] = tree
        return data


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    form = SegmentForm
    change_form_template = "admin/segments/segment/change_form.html"
    list_display = ("name", "key", "summary", "updated_at")
    search_fields = ("name", "key")
    prepopulated_fields = {"key": ("name",)}

    @admin.display(description="Conditions")
    def summary(self, obj: Segment) -> str:
        return describe(obj.conditions)

    def get_urls(self):
        return [
            path(
                "count/",
                self.admin_site.admin_view(self.count_view),
                name="segments_segment_count",
            ),
            *super().get_urls(),
        ]

    def count_view(self, request: HttpRequest) -> JsonResponse:
        """POST {"conditions": tree, "key": "..."} -> problems, or size, reach and a sample."""
        if request.method != "POST" or not self.has_view_permission(request):
            return JsonResponse({"error": "POST the conditions."}, status=405)
        if len(request.body) > MAX_BODY:
            return JsonResponse({"error": "Too many conditions."}, status=413)
        try:
            body = json.loads(request.body)
            tree = body.get("conditions") or {"all": []}
        except (ValueError, AttributeError):
            return JsonResponse({"error": "Send the conditions as JSON."}, status=400)
        problems = segment_problems(tree, key=body.get("key") or None)
        if problems:
            return JsonResponse(
                {"problems": [{"path": p.path, "message": p.message} for p in problems]}
            )
        count = segment_count(tree)
        sample = segment_sample(tree, 10)
        for member in sample:
            member["url"] = reverse("admin:audience_customer_change", args=[member["id"]])
        return JsonResponse(
            {
                "problems": [],
                "size": count.size,
                "reachable": count.reachable,
                "milliseconds": round(count.milliseconds),
                "summary": describe(tree),
                "sample": sample,
            }
        )

    def save_model(self, request, obj, form, change) -> None:
        # The form validated the conditions; the service writes (and checks again).
        saved, _created = segment_save(
            key=obj.key,
            name=obj.name,
            description=obj.description,
            conditions=form.cleaned_data["conditions"],
        )
        obj.pk = saved.pk

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        form = context["adminform"].form
        problems = getattr(form, "problems", [])
        context["editor"] = {
            "count_url": reverse("admin:segments_segment_count"),
            "topics": list(Topic.objects.order_by("key").values_list("key", flat=True)),
            "templates": list(
                MessageTemplate.objects.order_by("key").values_list("key", flat=True)
            ),
            "segments": list(
                Segment.objects.exclude(pk=getattr(obj, "pk", None))
                .order_by("key")
                .values_list("key", flat=True)
            ),
            "channels": list(CHANNELS),
            "problems": [{"path": p.path, "message": p.message} for p in problems],
        }
        if obj is not None and obj.pk:
            sizes = segment_sizes(obj)
            context["sizes"] = sizes
            if sizes:
                context["size_chart"] = line_chart(
                    [s.day.isoformat() for s in sizes],
                    [Series("customers", [s.size for s in sizes])],
                    title=f"Size of {obj.name} by day",
                )
        return super().render_change_form(request, context, add, change, form_url, obj)
