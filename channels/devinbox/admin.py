"""Admin for the dev inbox: what the devinbox adapter "delivered", searchable by recipient."""

from __future__ import annotations

from django.contrib import admin

from orchestrator.core.adminkit import ReadOnlyAdminMixin, preformatted, pretty_json

from .models import InboxMessage


@admin.register(InboxMessage)
class InboxMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("received_at", "channel", "to_address", "headline", "message_ref")
    list_filter = ("channel", "received_at")
    search_fields = ("to_address", "subject", "body", "=message_ref", "=provider_message_id")
    date_hierarchy = "received_at"
    fields = (
        "received_at",
        "channel",
        "to_address",
        "subject",
        "text",
        "html_source",
        "provider_message_id",
        "message_ref",
        "header_list",
        "meta_list",
    )
    readonly_fields = fields

    # Deleting is allowed: the dev inbox is a scratch pad, not a ledger.
    def has_delete_permission(self, request, obj=None) -> bool:
        return True

    @admin.display(description="subject / text")
    def headline(self, obj: InboxMessage) -> str:
        text = obj.subject or obj.body
        return text[:90] + ("…" if len(text) > 90 else "")

    @admin.display(description="text")
    def text(self, obj: InboxMessage):
        return preformatted(obj.body)

    @admin.display(description="HTML (source)")
    def html_source(self, obj: InboxMessage):
        return preformatted(obj.html) if obj.html else "-"

    @admin.display(description="headers")
    def header_list(self, obj: InboxMessage):
        return pretty_json(obj.headers)

    @admin.display(description="meta")
    def meta_list(self, obj: InboxMessage):
        return pretty_json(obj.meta)
