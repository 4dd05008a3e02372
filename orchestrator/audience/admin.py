"""Admin for customers and their events: find a person fast, see what they agreed to and got."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from orchestrator.audience.models import Customer, Event
from orchestrator.consent.models import ChannelPreference, Subscription
from orchestrator.core.adminkit import ReadOnlyAdminMixin, ReadOnlyInline, admin_link, html_table

RECENT_MESSAGES = 15


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
