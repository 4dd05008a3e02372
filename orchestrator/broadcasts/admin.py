"""Broadcasts in the admin: list, edit, and one page to preview, test send, forecast,
schedule, cancel and follow progress and results. Each button calls one service."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from orchestrator.audience.models import Customer
from orchestrator.broadcasts.audience import AudienceMissing
from orchestrator.broadcasts.forecast import broadcast_forecast
from orchestrator.broadcasts.models import Broadcast
from orchestrator.broadcasts.selectors import (
    broadcast_preview,
    broadcast_progress,
    broadcast_results,
)
from orchestrator.broadcasts.services import (
    EDITABLE,
    BroadcastInvalid,
    broadcast_cancel,
    broadcast_problems,
    broadcast_save,
    broadcast_schedule,
    broadcast_test_send,
)
from orchestrator.delivery.services import SendRefused


class BroadcastForm(forms.ModelForm):
    class Meta:
        model = Broadcast
        fields = ["key", *EDITABLE]
        widgets = {
            "local_date": forms.DateInput(attrs={"type": "date"}),
            "local_time": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        }

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        candidate = Broadcast(**{n: cleaned.get(n) for n in self._meta.fields if n in cleaned})
        for field, problems in broadcast_problems(candidate).items():
            for problem in problems:
                self.add_error(field if field in self.fields else None, problem)
        return cleaned


@admin.register(Broadcast)
class BroadcastAdmin(admin.ModelAdmin):
    form = BroadcastForm
    list_display = ["name", "key", "status", "audience_text", "when", "due_at", "manage"]
    list_filter = ["status"]
    search_fields = ["key", "name"]
    readonly_fields = ["status", "due_at", "ab_winner", "manage"]
    fieldsets = [
        (None, {"fields": ["key", "name", "template", "topic", "channel", "data", "priority"]}),
        ("Audience", {"fields": ["audience", "segment"]}),
        (
            "Schedule",
            {
                "fields": [
                    "schedule",
                    "send_at",
                    ("local_date", "local_time"),
                    "rate_per_minute",
                    "expires_at",
                ]
            },
        ),
        (
            "A/B test",
            {
                "fields": [
                    "ab_share",
                    "ab_kind",
                    "ab_template",
                    "ab_subject",
                    "ab_wait",
                    "ab_metric",
                    "ab_conversion_event",
                ]
            },
        ),
        ("State", {"fields": ["status", "due_at", "ab_winner", "manage"]}),
    ]

    @admin.display(description="Audience")
    def audience_text(self, obj: Broadcast) -> str:
        if obj.audience == Broadcast.Audience.SEGMENT:
            return f"segment {obj.segment}"
        return f"subscribers of {obj.topic.key}"

    @admin.display(description="When")
    def when(self, obj: Broadcast) -> str:
        if obj.schedule == Broadcast.Schedule.LOCAL_TIME:
            return f"{obj.local_date} {obj.local_time:%H:%M} in each customer's zone"
        if obj.schedule == Broadcast.Schedule.AT:
            return f"{obj.send_at:%Y-%m-%d %H:%M %Z}"
        return "when scheduled"

    @admin.display(description="Preview, test, forecast, schedule, progress")
    def manage(self, obj: Broadcast) -> str:
        if obj.pk is None:
            return "-"
        url = reverse("admin:broadcasts_broadcast_manage", args=[obj.pk])
        return format_html('<a href="{}" class="manage-link">Open</a>', url)

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status not in (
            Broadcast.Status.DRAFT,
            Broadcast.Status.SCHEDULED,
        ):
            return [*self.form._meta.fields, *self.readonly_fields]
        if obj is not None:
            return ["key", *self.readonly_fields]
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        fields = {n: form.cleaned_data[n] for n in EDITABLE if n in form.cleaned_data}
        try:
            saved, _created = broadcast_save(key=obj.key, fields=fields)
        except BroadcastInvalid as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        obj.pk = saved.pk

    def get_urls(self):
        return [
            path(
                "<int:pk>/manage/",
                self.admin_site.admin_view(self.manage_view),
                name="broadcasts_broadcast_manage",
            ),
            *super().get_urls(),
        ]

    def _back(self, broadcast: Broadcast) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse("admin:broadcasts_broadcast_manage", args=[broadcast.pk])
        )

    def manage_view(self, request, pk: int):
        broadcast = get_object_or_404(
            Broadcast.objects.select_related("template", "topic", "ab_template"), pk=pk
        )
        if not self.has_view_permission(request, broadcast):
            raise PermissionDenied
        if request.method == "POST":
            if not self.has_change_permission(request, broadcast):
                raise PermissionDenied
            return self._act(request, broadcast)
        if request.method != "GET":
            return HttpResponse(status=405, headers={"Allow": "GET, POST"})
        preview_for = request.GET.get("preview", "").strip()
        previews, preview_problem = [], ""
        if preview_for:
            customer = Customer.objects.filter(external_id=preview_for).first()
            if customer is None:
                preview_problem = f"No customer {preview_for!r}."
            else:
                previews = broadcast_preview(broadcast, customer)
        forecast, forecast_problem = None, ""
        if request.GET.get("forecast"):
            try:
                forecast = broadcast_forecast(broadcast)
            except AudienceMissing as exc:
                forecast_problem = str(exc)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Broadcast: {broadcast.name}",
            "broadcast": broadcast,
            "progress": broadcast_progress(broadcast),
            "results": broadcast_results(broadcast),
            "previews": previews,
            "preview_for": preview_for,
            "preview_problem": preview_problem,
            "forecast": forecast,
            "forecast_problem": forecast_problem,
        }
        return TemplateResponse(request, "admin/broadcasts/broadcast/manage.html", context)

    def _act(self, request, broadcast: Broadcast):
        action = request.POST.get("action")
        try:
            if action == "schedule":
                broadcast_schedule(broadcast=broadcast)
                self.message_user(request, f"Scheduled; due {broadcast.due_at:%Y-%m-%d %H:%M} UTC.")
            elif action == "cancel":
                n = broadcast_cancel(broadcast=broadcast)
                self.message_user(request, f"Canceled; {n} waiting messages will not go out.")
            elif action == "test":
                ids = [i.strip() for i in request.POST.get("customers", "").split(",") if i.strip()]
                customers = list(Customer.objects.filter(external_id__in=ids))
                missing = set(ids) - {c.external_id for c in customers}
                if not ids or missing:
                    self.message_user(
                        request,
                        f"Name customers by external id; unknown: {', '.join(sorted(missing))}"
                        if missing
                        else "Name at least one customer by external id.",
                        messages.ERROR,
                    )
                else:
                    sent = broadcast_test_send(broadcast=broadcast, customers=customers)
                    self.message_user(request, f"Test send queued: {len(sent)} messages.")
            else:
                return HttpResponse(status=400)
        except BroadcastInvalid as exc:
            self.message_user(request, str(exc), messages.ERROR)
            for field, problems in exc.fields.items():
                for problem in problems:
                    self.message_user(request, f"{field}: {problem}", messages.ERROR)
        except SendRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)
        return self._back(broadcast)
