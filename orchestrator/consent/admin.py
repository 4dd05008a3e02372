"""Admin for topics, consent and suppressions.

The consent ledger is evidence and append-only: it is shown, never edited or
deleted here. Subscriptions (the current state the ledger produces) are read-only
too; they change through the preference center, the API and inbound keywords.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Count, Q

from orchestrator.consent.models import (
    CHANNELS,
    ChannelOptOut,
    ChannelPreference,
    ConsentRecord,
    Subscription,
    Suppression,
    Topic,
    address_hash,
)
from orchestrator.core.adminkit import ReadOnlyAdminMixin, admin_link, pretty_json


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "key",
        "kind",
        "default_opt_in",
        "digestible",
        "channel_list",
        "subscribed",
    )
    list_filter = ("kind", "default_opt_in", "digestible")
    search_fields = ("key", "name", "description")
    prepopulated_fields = {"key": ("name",)}
    readonly_fields = ("created_at", "updated_at")

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _subscribed=Count(
                    "subscriptions",
                    filter=Q(subscriptions__status=Subscription.Status.SUBSCRIBED),
                )
            )
        )

    @admin.display(description="channels")
    def channel_list(self, obj: Topic) -> str:
        return ", ".join(obj.channels)

    @admin.display(description="explicit opt-ins", ordering="_subscribed")
    def subscribed(self, obj: Topic) -> int:
        return obj._subscribed


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("customer_link", "topic", "channel", "status", "updated_at")
    list_filter = ("topic", "channel", "status")
    search_fields = ("=customer__external_id", "customer__email")
    list_select_related = ("customer", "topic")
    date_hierarchy = "updated_at"

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, obj: Subscription):
        return admin_link(obj.customer)


@admin.register(ConsentRecord)
class ConsentRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "customer_link", "action", "topic", "channel_label", "source")
    list_filter = ("action", "source", "channel", "topic", "created_at")
    search_fields = ("=customer__external_id", "customer__email")
    list_select_related = ("customer", "topic")
    date_hierarchy = "created_at"
    fields = ("customer_link", "action", "topic", "channel_label", "source", "created_at", "proof")
    readonly_fields = fields

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, obj: ConsentRecord):
        return admin_link(obj.customer)

    @admin.display(description="channel", ordering="channel")
    def channel_label(self, obj: ConsentRecord) -> str:
        return obj.get_channel_display() if obj.channel else "all channels"

    @admin.display(description="evidence")
    def proof(self, obj: ConsentRecord):
        return pretty_json(obj.evidence)


@admin.register(ChannelOptOut)
class ChannelOptOutAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Written by STOP / START and provider unsubscribes; the ledger holds the evidence."""

    list_display = ("customer_link", "channel", "source", "created_at")
    list_filter = ("channel", "source")
    search_fields = ("=customer__external_id",)
    list_select_related = ("customer",)

    @admin.display(description="customer")
    def customer_link(self, obj: ChannelOptOut):
        return admin_link(obj.customer)


@admin.register(ChannelPreference)
class ChannelPreferenceAdmin(admin.ModelAdmin):
    list_display = (
        "customer_link",
        "order",
        "quiet_hours_start",
        "quiet_hours_end",
        "paused_until",
        "updated_at",
    )
    list_filter = ("updated_at",)
    search_fields = ("=customer__external_id", "customer__email")
    list_select_related = ("customer",)
    raw_id_fields = ("customer",)

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, obj: ChannelPreference):
        return admin_link(obj.customer)

    @admin.display(description="channel order")
    def order(self, obj: ChannelPreference) -> str:
        return " → ".join(obj.channel_order) or "default"


class SuppressionAddForm(forms.ModelForm):
    """Operators type the address; only its hash is stored, as for erased customers."""

    address = forms.CharField(
        max_length=320, help_text="Email, E.164 phone or LINE user id. Only its hash is stored."
    )

    class Meta:
        model = Suppression
        fields = ("channel", "address", "reason", "detail")

    def save(self, commit: bool = True):
        self.instance.address_hash = address_hash(
            self.cleaned_data["channel"], self.cleaned_data["address"]
        )
        return super().save(commit=commit)

    def clean(self):
        cleaned = super().clean()
        channel, address = cleaned.get("channel"), cleaned.get("address")
        if channel and address:
            digest = address_hash(channel, address)
            # An operator's row holds for every sender; a STOP to one of them does not.
            if Suppression.objects.filter(channel=channel, address_hash=digest, sender="").exists():
                raise forms.ValidationError("This address is already suppressed on that channel.")
        return cleaned


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    list_display = ("created_at", "channel", "short_hash", "reason", "sender", "detail")
    list_filter = ("channel", "reason", "created_at")
    search_fields = ("=address_hash", "detail")
    date_hierarchy = "created_at"

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = SuppressionAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("channel", "address", "reason", "detail")
        return (
            "channel",
            "address_hash",
            "reason",
            "sender",
            "allows_message_id",
            "detail",
            "created_at",
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("channel", "address_hash", "reason", "sender", "allows_message_id", "created_at")

    def get_search_results(self, request, queryset, search_term):
        # Operators search by the address itself; only its hash is stored.
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            hashes = [address_hash(channel, term) for channel in CHANNELS]
            results = results | queryset.filter(address_hash__in=hashes)
        return results, may_have_duplicates

    @admin.display(description="address hash")
    def short_hash(self, obj: Suppression) -> str:
        return f"{obj.address_hash[:12]}…"
