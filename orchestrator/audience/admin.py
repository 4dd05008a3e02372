"""Admin for customers and their events: find a person fast, see what they agreed to and got.

A customer page also exports everything held about the person (a JSON download) and
erases them (a confirmation page, then ``customer_erase``). Plain deletion is not
offered: it would forget the addresses without suppressing them, and the person could
be messaged again when the shop next reports them.
"""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import slugify

from orchestrator.analytics.timeline import customer_timeline
from orchestrator.audience.models import Customer, Event
from orchestrator.consent.models import ChannelPreference, Subscription
from orchestrator.core.adminkit import ReadOnlyAdminMixin, ReadOnlyInline, admin_link, html_table
from orchestrator.delivery.models import WAITING_STATUSES
from orchestrator.privacy.services import customer_erase, customer_export

RECENT_MESSAGES = 15
TIMELINE_PAGE = 50
#: A symbol and a word per kind of timeline entry (plain text: no icon font, no CDN).
TIMELINE_KINDS = {
    "event": ("\u25cf", "event"),
    "message": ("\u2709", "message"),
    "status": ("\u21bb", "status"),
    "consent": ("\u2713", "consent"),
    "journey": ("\u27a4", "journey"),
}


class SubscriptionInline(ReadOnlyInline):
    """Current consent per topic and channel; it changes only through the consent ledger."""

    model = Subscription
    fields = ("topic", "channel", "status", "updated_at")
    readonly_fields = fields
    verbose_name_plural = "Subscriptions (changed by the customer or the API, never here)"


class ChannelPreferenceInline(admin.StackedInline):
    model = ChannelPreference
    can_delete = False
    extra = 0
    fields = ("channel_order", "quiet_hours_start", "quiet_hours_end", "paused_until")


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = (
        "external_id",
        "name",
        "email",
        "phone",
        "reachable_on",
        "locale",
        "timezone",
        "created_at",
    )
    list_filter = ("locale", "timezone", "created_at")
    search_fields = ("=external_id", "email", "phone", "whatsapp", "line_user_id")
    date_hierarchy = "created_at"
    readonly_fields = ("created_at", "updated_at", "recent_messages", "recent_events")
    fieldsets = (
        (None, {"fields": ("external_id", "locale", "timezone", "attributes")}),
        ("Addresses", {"fields": ("email", "phone", "whatsapp", "line_user_id")}),
        ("Activity", {"fields": ("recent_messages", "recent_events", "created_at", "updated_at")}),
    )
    inlines = (ChannelPreferenceInline, SubscriptionInline)
    list_per_page = 50
    change_form_template = "admin/audience/customer/change_form.html"

    @admin.display(description="name")
    def name(self, obj: Customer) -> str:
        attributes = obj.attributes or {}
        first, last = attributes.get("first_name", ""), attributes.get("last_name", "")
        if obj.locale.startswith("ja"):
            return f"{last} {first}".strip()  # family name first in Japanese
        return f"{first} {last}".strip()

    @admin.display(description="reachable on")
    def reachable_on(self, obj: Customer) -> str:
        return ", ".join(c for c in ("email", "sms", "whatsapp", "line") if obj.address_for(c))

    @admin.display(description=f"latest {RECENT_MESSAGES} messages")
    def recent_messages(self, obj: Customer):
        if obj.pk is None:
            return "-"
        messages = obj.messages.select_related("template", "topic").order_by("-created_at")[
            :RECENT_MESSAGES
        ]
        return html_table(
            ("message", "created", "channel", "template", "topic", "status"),
            (
                (
                    admin_link(m, f"#{m.pk}"),
                    m.created_at.strftime("%Y-%m-%d %H:%M"),
                    m.channel,
                    m.template.key,
                    m.topic.key,
                    m.get_status_display(),
                )
                for m in messages
            ),
        )

    @admin.display(description="latest events")
    def recent_events(self, obj: Customer):
        if obj.pk is None:
            return "-"
        events = obj.events.order_by("-occurred_at")[:10]
        return html_table(
            ("event", "occurred", "properties"),
            (
                (
                    admin_link(e, e.name),
                    e.occurred_at.strftime("%Y-%m-%d %H:%M"),
                    ", ".join(f"{k}: {v}" for k, v in (e.properties or {}).items()),
                )
                for e in events
            ),
        )

    # --- timeline ------------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        if str(object_id).isdigit():
            customer = Customer.objects.filter(pk=object_id).first()
            if customer is not None:
                extra_context["timeline"] = timeline_context(
                    customer, before=_parse_before(request.GET.get("before"))
                )
        return super().change_view(request, object_id, form_url, extra_context)

    # --- data rights: export and erase ------------------------------------------------

    def get_urls(self):
        def view(func):
            return self.admin_site.admin_view(func)

        return [
            path("<int:pk>/export/", view(self.export_view), name="audience_customer_export"),
            path("<int:pk>/erase/", view(self.erase_view), name="audience_customer_erase"),
            *super().get_urls(),
        ]

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # erase one by one, with suppression
        return actions

    def delete_view(self, request, object_id, extra_context=None):
        """The Delete link leads to the erasure page, which also suppresses the addresses."""
        if not str(object_id).isdigit():
            return super().delete_view(request, object_id, extra_context)
        return HttpResponseRedirect(reverse("admin:audience_customer_erase", args=[object_id]))

    def export_view(self, request, pk: int) -> HttpResponse:
        customer = get_object_or_404(Customer, pk=pk)
        if not self.has_view_permission(request, customer):
            raise PermissionDenied
        data = customer_export(customer=customer)
        name = slugify(customer.external_id)[:60] or str(customer.pk)
        return HttpResponse(
            json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2),
            content_type="application/json; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="customer-{name}.json"'},
        )

    def erase_view(self, request, pk: int):
        customer = get_object_or_404(Customer, pk=pk)
        if not self.has_delete_permission(request, customer):
            raise PermissionDenied
        if request.method == "POST":
            try:
                summary = customer_erase(customer=customer, source="admin")
            except Customer.DoesNotExist:
                self.message_user(request, "The customer was erased already.", messages.INFO)
            else:
                channels = ", ".join(summary.suppressed_channels) or "none"
                self.message_user(
                    request,
                    f"Erased customer #{pk}: {summary.canceled_messages} waiting message(s) "
                    f"canceled, their data deleted; suppressed on: {channels}.",
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(reverse("admin:audience_customer_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Erase this customer?",
            "customer": customer,
            "counts": {
                "messages": customer.messages.count(),
                "waiting": customer.messages.filter(status__in=WAITING_STATUSES).count(),
                "events": customer.events.count(),
                "consent_records": customer.consent_records.count(),
            },
        }
        return TemplateResponse(request, "admin/audience/customer/erase.html", context)


def _parse_before(value: str | None) -> dt.datetime | None:
    """``?before=`` as an aware datetime; anything unreadable means the first page."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def timeline_context(customer: Customer, *, before: dt.datetime | None) -> dict:
    """The timeline grouped by day in the customer's own timezone, with the next page."""
    try:
        zone = ZoneInfo(customer.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    entries = customer_timeline(customer=customer, limit=TIMELINE_PAGE, before=before)
    days: list[dict] = []
    for entry in entries:
        local = entry.at.astimezone(zone)
        if not days or days[-1]["date"] != local.date():
            days.append({"date": local.date(), "rows": []})
        icon, label = TIMELINE_KINDS.get(entry.kind, ("\u2022", entry.kind))
        days[-1]["rows"].append(
            {
                "entry": entry,
                "icon": icon,
                "label": label,
                # Formatted here: template filters would convert to the admin's timezone.
                "local": local.strftime("%H:%M"),
                "utc": entry.at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            }
        )
    older = ""
    if len(entries) == TIMELINE_PAGE:
        older = "?" + urlencode({"before": entries[-1].at.astimezone(dt.UTC).isoformat()})
    return {
        "days": days,
        "zone": str(zone),
        "before": before,
        "older": older,
    }


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Events are facts reported by the shop; they are read here, never edited."""

    list_display = ("name", "customer_link", "occurred_at", "summary", "source", "event_id")
    list_filter = ("name", "source", "occurred_at")
    search_fields = ("=customer__external_id", "name", "=event_id")
    date_hierarchy = "occurred_at"
    list_select_related = ("customer",)
    fields = (
        "customer_link",
        "name",
        "occurred_at",
        "received_at",
        "source",
        "event_id",
        "properties",
    )
    readonly_fields = fields

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, obj: Event):
        return admin_link(obj.customer)

    @admin.display(description="properties")
    def summary(self, obj: Event):
        props = obj.properties or {}
        text = ", ".join(f"{k}: {v}" for k, v in list(props.items())[:4])
        return format_html("<span title='{}'>{}</span>", text, text[:80])
