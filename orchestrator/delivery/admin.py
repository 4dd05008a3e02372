"""Admin for templates (Liquid and opt-out links checked on save) and the message ledger.

Messages are read-only here: they are created by the API, journeys and the demo,
and changed only by the dispatcher and provider webhooks. Each message page shows
its status history and its decision trail (why it was sent, deferred or
suppressed) as tables a marketer can read.
"""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import path
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join

from journeys.selectors import series_names
from orchestrator.core.adminkit import (
    ReadOnlyAdminMixin,
    admin_link,
    details_text,
    html_table,
    preformatted,
    pretty_json,
)
from orchestrator.delivery.admin_views import fatigue_overview
from orchestrator.delivery.models import (
    FrequencyRule,
    Message,
    MessageEvent,
    MessageTemplate,
    TemplateVariant,
)
from orchestrator.delivery.rendering import TemplateProblem, check_syntax
from orchestrator.delivery.rule_services import clean_rule
from orchestrator.delivery.selectors import customer_explanation
from orchestrator.delivery.services import messages_cancel
from orchestrator.delivery.template_services import (
    opt_out_link_problem,
    provider_options_problem,
)


class TemplateVariantForm(forms.ModelForm):
    """Refuses Liquid that does not parse, naming the line, before it can reach a customer."""

    class Meta:
        model = TemplateVariant
        fields = ("channel", "locale", "subject", "body", "html", "provider_options")
        widgets = {
            "subject": forms.TextInput(attrs={"size": 80}),
            "body": forms.Textarea(attrs={"rows": 6, "cols": 80}),
            "html": forms.Textarea(attrs={"rows": 6, "cols": 80}),
        }

    def clean(self):
        cleaned = super().clean()
        for name in ("subject", "body", "html"):
            source = cleaned.get(name) or ""
            try:
                check_syntax(source, field=name, html=name == "html")
            except TemplateProblem as problem:
                where = f"Line {problem.line}: " if problem.line else ""
                self.add_error(name, f"{where}{problem.args[0]}")
        if cleaned.get("channel") != "email" and (cleaned.get("subject") or cleaned.get("html")):
            self.add_error("subject", "Subject and HTML are used by email variants only.")
        problem = provider_options_problem(cleaned.get("channel"), cleaned.get("provider_options"))
        if problem:
            self.add_error("provider_options", problem)
        return cleaned


class TemplateVariantFormSet(forms.BaseInlineFormSet):
    """On a marketing template, refuses a variant without an opt-out link.

    Checked here rather than in the variant form: the topic is the template's, and
    the template form's topic (possibly just changed) is on ``self.instance``.
    """

    def clean(self):
        super().clean()
        topic = self.instance.topic if self.instance.topic_id else None
        if topic is None or topic.kind != topic.Kind.MARKETING:
            return
        for form in self.forms:
            cleaned = getattr(form, "cleaned_data", None)
            if not cleaned or self._should_delete_form(form):
                continue
            channel = cleaned.get("channel") or ""
            for name in ("body", "html") if channel == "email" else ("body",):
                if name in form.errors:
                    continue  # a syntax error is the first thing to fix
                problem = opt_out_link_problem(
                    channel=channel,
                    locale=cleaned.get("locale") or "",
                    field=name,
                    source=cleaned.get(name) or "",
                )
                if problem:
                    form.add_error(name, problem)


class TemplateVariantInline(admin.StackedInline):
    model = TemplateVariant
    form = TemplateVariantForm
    formset = TemplateVariantFormSet
    extra = 0
    fields = (("channel", "locale"), "subject", "body", "html", "provider_options")


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "key", "topic", "variant_list", "track_clicks", "updated_at")
    list_filter = ("topic", "track_clicks", "variants__channel", "variants__locale")
    search_fields = ("key", "name", "description")
    prepopulated_fields = {"key": ("name",)}
    readonly_fields = ("created_at", "updated_at")
    inlines = (TemplateVariantInline,)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("topic").prefetch_related("variants")

    @admin.display(description="variants (channel/locale)")
    def variant_list(self, obj: MessageTemplate) -> str:
        return ", ".join(f"{v.channel}/{v.locale}" for v in obj.variants.all())


def _when(value: str | None) -> str:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None:
        return value or ""
    return parsed.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class MessageEventInline(admin.TabularInline):
    model = MessageEvent
    extra = 0
    can_delete = False
    fields = ("occurred_at", "status", "code", "reason", "provider_event_id")
    readonly_fields = fields
    verbose_name_plural = "Status history"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


def _rule_line(rule: dict) -> str:
    """One evaluated rule, as a marketer reads it: what it says, what it counted, the verdict."""
    if rule.get("rule") == "quiet_hours":
        inside = "inside" if rule.get("inside") else "outside"
        return (
            f"quiet hours {rule.get('window')} {rule.get('timezone')}: local time "
            f"{rule.get('local_time')}, {inside}"
        )
    if "held" in rule:
        return f"{rule.get('channel')} held: {rule['held']}"
    counted = f", {rule['count']} counted" if "count" in rule else ""
    verdict = "room left" if rule.get("ok") else f"full until {_when(rule.get('allowed_at'))}"
    return f"{rule.get('describe', rule.get('rule'))}{counted}: {verdict}"


def _details(details: dict | None):
    """Details of a trail entry; the policy's evaluated rules one per line."""
    if not details or "rules" not in details:
        return details_text(details)
    rest = {k: v for k, v in details.items() if k != "rules"}
    lines = [_rule_line(r) for r in details["rules"] if isinstance(r, dict)]
    if rest:
        lines.append(details_text(rest))
    return format_html_join("", "<div>{}</div>", ((line,) for line in lines)) or "no rules apply"


@admin.register(Message)
class MessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    actions = ["cancel_waiting"]

    def has_cancel_permission(self, request) -> bool:
        return request.user.has_perm("delivery.change_message")

    @admin.action(
        description="Cancel selected messages that have not started", permissions=["cancel"]
    )
    def cancel_waiting(self, request, queryset) -> None:
        ids = messages_cancel(
            message_ids=list(queryset.values_list("id", flat=True)),
            reason=f"canceled in the admin by {request.user.get_username()}",
        )
        skipped = queryset.count() - len(ids)
        self.message_user(
            request,
            f"Canceled {len(ids)} message(s)."
            + (
                f" {skipped} had already started or finished and were left alone."
                if skipped
                else ""
            ),
            messages.SUCCESS if ids else messages.WARNING,
        )

    list_display = (
        "id",
        "created_at",
        "customer_link",
        "channel",
        "template",
        "topic",
        "status_badge",
        "source",
        "send_after",
    )
    list_filter = ("status", "channel", "topic", "source", "template", "journey", "created_at")
    search_fields = (
        "=id",
        "=customer__external_id",
        "customer__email",
        "to_address",
        "=provider_message_id",
        "=idempotency_key",
    )
    date_hierarchy = "created_at"
    list_select_related = ("customer", "template", "topic")
    list_per_page = 50
    inlines = (MessageEventInline,)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "customer_link",
                    ("status", "channel", "requested_channel"),
                    ("template", "topic", "locale"),
                    "to_address",
                    ("priority", "source", "journey"),
                    ("send_after", "expires_at", "decided_at"),
                    "fallback_channel",
                )
            },
        ),
        ("Why: the decision trail", {"fields": ("decision_trail", "customer_reason")}),
        ("Content", {"fields": ("rendered_preview", "request_data")}),
        (
            "Delivery",
            {
                "classes": ("collapse",),
                "fields": (
                    ("provider", "provider_message_id"),
                    ("attempts", "attempt_id"),
                    ("claimed_at", "handed_off_at", "sent_at"),
                    "last_error",
                    "idempotency_key",
                    ("created_at", "updated_at"),
                ),
            },
        ),
    )
    readonly_fields = (
        "customer_link",
        "status",
        "channel",
        "requested_channel",
        "template",
        "topic",
        "locale",
        "to_address",
        "priority",
        "source",
        "send_after",
        "expires_at",
        "decided_at",
        "journey",
        "fallback_channel",
        "decision_trail",
        "customer_reason",
        "rendered_preview",
        "request_data",
        "provider",
        "provider_message_id",
        "attempts",
        "attempt_id",
        "claimed_at",
        "handed_off_at",
        "sent_at",
        "last_error",
        "idempotency_key",
        "created_at",
        "updated_at",
    )

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, obj: Message):
        return admin_link(obj.customer)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Message):
        colour = {
            "sent": "#2e7d32",
            "delivered": "#2e7d32",
            "opened": "#2e7d32",
            "clicked": "#2e7d32",
            "replied": "#2e7d32",
            "suppressed": "#b26a00",
            "deferred": "#b26a00",
            "scheduled": "#1565c0",
            "queued": "#1565c0",
            "sending": "#1565c0",
        }.get(obj.status, "#c62828")
        return format_html(
            '<span style="color:{};font-weight:600">{}</span>', colour, obj.get_status_display()
        )

    @admin.display(description="decisions")
    def decision_trail(self, obj: Message):
        entries = obj.explanation if isinstance(obj.explanation, list) else []
        return html_table(
            ("when", "step", "decision", "why", "details"),
            (
                (
                    _when(entry.get("at")),
                    entry.get("step", ""),
                    entry.get("decision", ""),
                    entry.get("reason", ""),
                    _details(entry.get("details")),
                )
                for entry in entries
                if isinstance(entry, dict)
            ),
        )

    @admin.display(description="as the customer is told")
    def customer_reason(self, obj: Message):
        series = series_names([obj.journey]).get(obj.journey)
        lines = customer_explanation(obj, journey_name=series)
        return format_html_join("", "<p>{}</p>", ((line,) for line in lines))

    @admin.display(description="as rendered")
    def rendered_preview(self, obj: Message):
        rendered = obj.rendered or {}
        if not rendered:
            return format_html("<em>{}</em>", "not rendered yet (rendered at send time)")
        rows = [(k, rendered[k]) for k in ("subject", "body") if rendered.get(k)]
        table = html_table(
            ("part", "text"),
            ((part, preformatted(text)) for part, text in rows),
        )
        if rendered.get("html"):
            # The HTML part is shown as source: rendering marketer HTML inside the admin
            # would run it with the operator's session.
            return format_html(
                "{}<details><summary>HTML part (source)</summary>{}</details>",
                table,
                preformatted(rendered["html"]),
            )
        return table

    @admin.display(description="request data")
    def request_data(self, obj: Message):
        return pretty_json(obj.data)


@admin.register(MessageEvent)
class MessageEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("occurred_at", "message_link", "status", "code", "reason", "provider_event_id")
    list_filter = ("status", "occurred_at")
    search_fields = ("=message__id", "=provider_event_id", "code", "reason")
    date_hierarchy = "occurred_at"
    list_select_related = ("message",)
    fields = (
        "message_link",
        "status",
        "occurred_at",
        "code",
        "reason",
        "provider_event_id",
        "payload",
    )
    readonly_fields = fields

    @admin.display(description="message", ordering="message_id")
    def message_link(self, obj: MessageEvent):
        return admin_link(obj.message, f"#{obj.message_id}")

    @admin.display(description="raw provider payload")
    def payload(self, obj: MessageEvent):
        return pretty_json(obj.raw)


class FrequencyRuleForm(forms.ModelForm):
    """The same checks as the API, with messages on the fields a marketer can fix."""

    class Meta:
        model = FrequencyRule
        fields = (
            "name",
            "key",
            "description",
            "active",
            "kind",
            "limit",
            "window",
            "calendar",
            "applies_to",
            "action",
            "scope",
            "channel",
            "topic",
            "journey",
        )

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            clean_rule(
                key=cleaned.get("key") or "",
                name=cleaned.get("name") or "",
                kind=cleaned.get("kind"),
                scope=cleaned.get("scope"),
                channel=cleaned.get("channel") or "",
                topic=cleaned.get("topic"),
                journey=cleaned.get("journey") or "",
                limit=cleaned.get("limit") or 0,
                window=cleaned.get("window"),
                calendar=cleaned.get("calendar") or "",
                applies_to=cleaned.get("applies_to"),
                action=cleaned.get("action"),
            )
        except ValidationError as exc:
            for field, problems in exc.message_dict.items():
                for problem in problems:
                    self.add_error(field if field in self.fields else None, problem)
        return cleaned


@admin.register(FrequencyRule)
class FrequencyRuleAdmin(admin.ModelAdmin):
    """Fatigue rules are data a marketer edits; the form checks their shape on save."""

    form = FrequencyRuleForm
    change_list_template = "admin/delivery/frequencyrule/change_list.html"

    def get_urls(self):
        overview = self.admin_site.admin_view(
            lambda request: fatigue_overview(request, admin_site=self.admin_site)
        )
        return [
            path("overview/", overview, name="delivery_frequencyrule_overview"),
            *super().get_urls(),
        ]

    list_display = ("name", "key", "active", "summary", "applies_to", "action", "updated_at")
    list_filter = ("active", "kind", "scope", "applies_to", "action", "channel", "topic")
    search_fields = ("key", "name", "description", "journey")
    prepopulated_fields = {"key": ("name",)}
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "key", "description", "active")}),
        ("Rule", {"fields": ("kind", "limit", "window", "calendar", "applies_to", "action")}),
        ("Applies to", {"fields": ("scope", "channel", "topic", "journey")}),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="rule")
    def summary(self, obj: FrequencyRule) -> str:
        target = {
            "channel": f" by {obj.channel}",
            "topic": f" on {obj.topic}" if obj.topic_id else "",
            "journey": f" from journey {obj.journey}",
        }.get(obj.scope, "")
        if obj.kind == FrequencyRule.Kind.GAP:
            return f"at least {obj.window} between messages{target}"
        span = f"per calendar {obj.calendar}" if obj.calendar else f"per {obj.window}"
        return f"at most {obj.limit}{target} {span}"
