"""Admin: what providers reported and what people wrote to us, read-only."""

from __future__ import annotations

from django.contrib import admin

from channels.webhooks.models import WebhookEvent
from orchestrator.core.adminkit import ReadOnlyAdminMixin, admin_link, pretty_json
from orchestrator.delivery.models import InboundMessage


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("received_at", "provider", "kind", "event_id", "processed_at", "error")
    list_filter = ("provider", "kind", ("processed_at", admin.EmptyFieldListFilter))
    search_fields = ("=event_id",)
    fields = (
        "provider",
        "kind",
        "event_id",
        "received_at",
        "processed_at",
        "attempts",
        "error",
        "raw",
    )
    readonly_fields = fields

    @admin.display(description="payload")
    def raw(self, obj: WebhookEvent):
        return pretty_json(obj.payload)


@admin.register(InboundMessage)
class InboundMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("received_at", "channel", "customer_link", "outcome", "keyword", "body")
    list_filter = ("channel", "outcome", "provider")
    search_fields = ("=customer__external_id", "body")
    list_select_related = ("customer",)

    @admin.display(description="customer")
    def customer_link(self, obj: InboundMessage):
        return admin_link(obj.customer) if obj.customer_id else "unknown sender"
