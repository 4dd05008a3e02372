"""Admin for API keys (created through the same service as the CLI; the raw key is shown
once) and the idempotency records behind ``Idempotency-Key`` (read-only)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from orchestrator.api.auth import api_key_cache_clear, api_key_create
from orchestrator.api.models import ApiKey, IdempotencyRecord
from orchestrator.core.adminkit import ReadOnlyAdminMixin, pretty_json


class ApiKeyAddForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiKey
        fields = ("name", "scopes")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "scope_list", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at", "created_at")
    search_fields = ("name", "=prefix")
    date_hierarchy = "created_at"
    actions = ("revoke",)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "scopes")
        return ("name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("prefix", "scopes", "created_at", "last_used_at", "revoked_at")

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw = api_key_create(
            name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"]
        )
        # The admin goes on with ``obj`` (log entry, redirect): make it the row just created.
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = (
            key.pk,
            key.prefix,
            key.key_hash,
            key.created_at,
        )
        obj._state.adding = False
        messages.warning(
            request,
            f"API key {key.name!r}: {raw} - copy it now; it is stored hashed and "
            "will not be shown again.",
        )

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        api_key_cache_clear()  # other processes follow within API_KEY_CACHE_SECONDS
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "key", "api_key", "method", "path", "state", "response_status")
    list_filter = ("state", "method", "response_status", "created_at")
    search_fields = ("=key", "path")
    date_hierarchy = "created_at"
    list_select_related = ("api_key",)
    fields = (
        "key",
        "api_key",
        "method",
        "path",
        "state",
        "response_status",
        "request_hash",
        "created_at",
        "response",
    )
    readonly_fields = fields

    @admin.display(description="response body")
    def response(self, obj: IdempotencyRecord):
        return pretty_json(obj.response_body)
