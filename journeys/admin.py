"""The journey builder in the admin: edit, check, draw, test-send, switch on and off.

Journeys are edited as plain fields with their steps inline (``admin_forms``); the
trigger settings' fieldsets come from the trigger kinds (``journeys.triggers.registry``).
The page shows its version history (who published what, when) and leads to the
canvas, which draws the journey with live counts. Activate, pause, archive, test send,
simulate, export and import are buttons that call the services in
``journeys.services``, ``journeys.test_send`` and ``journeys.simulation``; this module
only routes and reports. Enrollments and their step log are read-only records.

The canvas (``<pk>/canvas/``) is the visual builder: a page plus JSON endpoints under
it (state, validate, draft, diff, publish, simulate, counts, preview, versions), which
read ``journeys.canvas`` and save through the same services as the API, after the
API's own type checks of the definition.
"""

from __future__ import annotations

import datetime as dt
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import localtime

from journeys import canvas, simulation
from journeys.admin_forms import (
    ImportForm,
    JourneyForm,
    StepForm,
    StepFormSet,
    TestSendForm,
    definition_problems_text,
)
from journeys.definition import export
from journeys.models import Enrollment, Journey, Step, StepRun
from journeys.problems import DefinitionInvalid
from journeys.services import (
    journey_activate,
    journey_archive,
    journey_discard_draft,
    journey_pause,
    journey_publish,
    journey_publish_draft,
    journey_save,
    journey_save_draft,
)
from journeys.test_send import journey_test_send
from journeys.triggers import registry
from orchestrator.analytics import journey_stats as stats
from orchestrator.api.journeys import JourneySerializer
from orchestrator.core.adminkit import (
    ReadOnlyAdminMixin,
    ReadOnlyInline,
    admin_link,
    html_table,
    pretty_json,
)
from orchestrator.core.charts import Series, bar_chart

#: Plain words for the simulation's hold codes (``rule:<key>`` is spelled out apart).
HOLD_REASONS = {
    "quiet_hours": "quiet hours",
    "paused": "sending paused",
    "personal_cap": "customer's own limit",
    "consent": "no consent",
    "suppressed": "suppressed",
    "no_channel": "no usable channel",
    "defer": "deferred",
    "drop": "dropped",
}


class SimulateForm(forms.Form):
    days = forms.IntegerField(
        min_value=1,
        max_value=simulation.MAX_DAYS,
        initial=14,
        help_text=f"How many days ahead, today first (1 to {simulation.MAX_DAYS}).",
    )
    sample = forms.IntegerField(
        label="Sample size",
        min_value=1,
        max_value=simulation.MAX_SAMPLE,
        initial=2000,
        help_text="Most entrants walked through the steps; the rest are scaled from them "
        f"(1 to {simulation.MAX_SAMPLE:,}).",
    )


def hold_reason(code: str) -> str:
    if code.startswith("rule:"):
        return f"frequency rule {code[5:]}"
    return HOLD_REASONS.get(code, code.replace("_", " "))


class StepInline(admin.StackedInline):
    model = Step
    form = StepForm
    formset = StepFormSet
    extra = 1
    ordering = ("position", "id")
    verbose_name = "step"
    verbose_name_plural = "Steps (the first is where customers enter)"
    fieldsets = (
        (None, {"fields": (("key", "position"), "kind", "label", ("next", "alt_next"))}),
        (
            "Send a message",
            {
                "classes": ("step-kind", "kind-send"),
                "fields": (
                    ("send_template", "send_channel"),
                    "send_fallback",
                    "send_ttl_hours",
                ),
            },
        ),
        (
            "Send as a digest",
            {
                "classes": ("step-kind", "kind-digest"),
                "fields": (
                    ("digest_template", "digest_channel"),
                    ("digest_minutes", "digest_count", "digest_key"),
                ),
            },
        ),
        (
            "Wait",
            {
                "classes": ("step-kind", "kind-wait"),
                "fields": (
                    "wait_mode",
                    ("wait_amount", "wait_unit"),
                    "wait_time",
                    ("wait_date_from", "wait_date_attribute"),
                    ("wait_offset", "wait_offset_unit", "wait_offset_direction"),
                ),
            },
        ),
        (
            "Wait for an event",
            {
                "classes": ("step-kind", "kind-wait_for_event"),
                "fields": ("wfe_event", ("wfe_timeout", "wfe_timeout_unit"), "wfe_filter"),
            },
        ),
        (
            "Branch",
            {
                "classes": ("step-kind", "kind-branch"),
                "fields": ("branch_conditions", "branch_match"),
            },
        ),
        ("Random split", {"classes": ("step-kind", "kind-split"), "fields": ("split_percent",)}),
        (
            "Update an attribute",
            {
                "classes": ("step-kind", "kind-update_attribute"),
                "fields": (("attr_name", "attr_value"), "attr_from_context"),
            },
        ),
        (
            "Webhook",
            {
                "classes": ("step-kind", "kind-webhook"),
                "fields": ("webhook_url", "webhook_timeout"),
            },
        ),
    )


class TriggerKindFilter(admin.SimpleListFilter):
    """The trigger kinds by the builder's words for them (the registry's labels)."""

    title = "starts when"
    parameter_name = "trigger_kind"

    def lookups(self, request, model_admin):
        return registry.choices()

    def queryset(self, request, queryset):
        return queryset.filter(trigger_kind=self.value()) if self.value() else queryset


# --- the canvas: a page and its JSON endpoints ---------------------------------------------

#: The canvas's endpoints: URL name suffix -> (path under canvas/, view method).
CANVAS_ENDPOINTS = {
    "state": "state.json",
    "validate": "validate.json",
    "draft": "draft.json",
    "diff": "diff.json",
    "publish": "publish.json",
    "simulate": "simulate.json",
    "counts": "counts.json",
    "preview": "preview.json",
    "versions": "versions.json",
    "discard": "discard.json",
}


class BadRequest(Exception):
    """A request the canvas cannot use; ``message`` says why in plain words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _problem(message: str, field: str = "") -> dict:
    return {"field": field, "step": None, "message": message}


def _json_body(request) -> dict:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"The request is not valid JSON ({exc}).") from None
    if not isinstance(body, dict):
        raise BadRequest("The request must be a JSON object.")
    return body


def _flatten(errors, field: str, value) -> list[tuple[str, str]]:
    """DRF's nested errors as (field, message) pairs; a step is named by its key."""
    if isinstance(errors, dict):
        out = []
        if field == "steps" and all(str(k).isdigit() for k in errors):
            return (
                _flatten(
                    [
                        errors.get(i, errors.get(str(i), {}))
                        for i in range(max(int(k) for k in errors) + 1)
                    ],
                    field,
                    value,
                )
                if errors
                else []
            )
        for name, inner in errors.items():
            child = value.get(name) if isinstance(value, dict) else None
            if name == "non_field_errors":
                out += _flatten(inner, field, value)
            else:
                out += _flatten(inner, f"{field}.{name}" if field else name, child)
        return out
    if isinstance(errors, list) and any(isinstance(e, dict | list) for e in errors):
        out = []
        for i, inner in enumerate(errors):
            item = value[i] if isinstance(value, list) and i < len(value) else None
            key = item.get("key") if isinstance(item, dict) else None
            where = (
                f"{field}.{key}"
                if field == "steps" and isinstance(key, str) and key
                else (f"{field}[{i}]")
            )
            out += _flatten(inner, where, item)
        return out
    return [(field, str(e)) for e in (errors if isinstance(errors, list) else [errors])]


def _definition_of_request(request) -> dict:
    """The body's definition after the API's type checks (``PUT /api/v1/journeys``):
    a value of the wrong JSON type is a problem, as it is there."""
    definition = _json_body(request).get("definition")
    if not isinstance(definition, dict):
        raise BadRequest('Send the journey as {"definition": {...}}.')
    definition = {k: v for k, v in definition.items() if k not in ("status", "version")}
    checked = JourneySerializer(data=definition)
    if not checked.is_valid():
        problems = [
            canvas.type_problem(field, message, definition)
            for field, message in _flatten(checked.errors, "", definition)
        ]
        raise DefinitionInvalid(problems)
    return definition


def _invalid(problems, definition, status: int = 400) -> JsonResponse:
    return JsonResponse({"problems": canvas.problems_json(problems, definition)}, status=status)


class JourneyCanvasMixin:
    """The canvas page and its JSON endpoints, permission-checked like the change view
    (view permission to read, change permission to write)."""

    def canvas_urls(self, view) -> list:
        urls = [path("<int:pk>/canvas/", view(self.canvas_view), name="journeys_journey_canvas")]
        for name, leaf in CANVAS_ENDPOINTS.items():
            urls.append(
                path(
                    f"<int:pk>/canvas/{leaf}",
                    view(self._canvas_endpoint(name)),
                    name=f"journeys_journey_canvas_{name}",
                )
            )
        return urls

    def _canvas_endpoint(self, name: str):
        handler = getattr(self, f"canvas_{name}")
        writes = name in ("validate", "draft", "publish", "simulate", "discard")

        def endpoint(request, pk: int):
            if request.method != ("POST" if writes else "GET"):
                allowed = "POST" if writes else "GET"
                return JsonResponse(
                    {"message": f"Use {allowed}."}, status=405, headers={"Allow": allowed}
                )
            # validate and simulate only read, but they are POSTed: view permission will do.
            change = name in ("draft", "publish", "discard")
            journey = self._journey(request, pk, change=change)
            try:
                return handler(request, journey)
            except BadRequest as exc:
                return JsonResponse(
                    {"message": exc.message, "problems": [_problem(exc.message)]}, status=400
                )

        endpoint.__name__ = f"canvas_{name}_endpoint"
        return endpoint

    def canvas_urls_of(self, journey: Journey) -> dict[str, str]:
        urls = {"page": reverse("admin:journeys_journey_canvas", args=[journey.pk])}
        for name in CANVAS_ENDPOINTS:
            urls[name] = reverse(f"admin:journeys_journey_canvas_{name}", args=[journey.pk])
        urls["form"] = reverse("admin:journeys_journey_change", args=[journey.pk])
        urls["simulate_page"] = reverse("admin:journeys_journey_simulate", args=[journey.pk])
        return urls

    def canvas_view(self, request, pk: int):
        journey = self._journey(request, pk, change=False)
        can_change = self.has_change_permission(request, journey)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Canvas: {journey.name}",
            "journey": journey,
            "state": {
                **canvas.state(journey, self.canvas_urls_of(journey)),
                "can_change": can_change,
            },
            "can_change": can_change,
        }
        return TemplateResponse(request, "admin/journeys/journey/canvas.html", context)

    def canvas_state(self, request, journey: Journey) -> JsonResponse:
        data = canvas.state(journey, self.canvas_urls_of(journey))
        data["can_change"] = self.has_change_permission(request, journey)
        return JsonResponse(data)

    def canvas_validate(self, request, journey: Journey) -> JsonResponse:
        try:
            definition = _definition_of_request(request)
        except DefinitionInvalid as exc:
            return _invalid(exc.problems, _json_body(request).get("definition"), status=200)
        definition = {**definition, "key": journey.key}
        return JsonResponse(
            {"problems": canvas.problems_json(canvas.check(definition), definition)}
        )

    def canvas_draft(self, request, journey: Journey) -> JsonResponse:
        """Keep the canvas's draft apart from what runs, problems and all (they are
        returned to be shown); only a body of the wrong shape or types is refused."""
        raw = _json_body(request).get("definition")
        try:
            definition = _definition_of_request(request)
        except DefinitionInvalid as exc:
            return _invalid(exc.problems, raw)
        saved = journey_save_draft(journey=journey, definition=definition, by=request.user)
        saved = Journey.objects.select_related("topic", "current_version", "draft_saved_by").get(
            pk=saved.pk
        )
        draft = canvas.pending(saved)
        return JsonResponse(
            {
                "draft": draft,
                "problems": canvas.problems_json(canvas.check(draft), draft),
                "has_unpublished_changes": canvas.has_unpublished_changes(saved),
                "journey": canvas.journey_json(saved),
            }
        )

    def canvas_discard(self, request, journey: Journey) -> JsonResponse:
        journey_discard_draft(journey=journey)
        fresh = Journey.objects.select_related("topic", "current_version").get(pk=journey.pk)
        return JsonResponse({"draft": canvas.pending(fresh), "journey": canvas.journey_json(fresh)})

    def canvas_diff(self, request, journey: Journey) -> JsonResponse:
        return JsonResponse(canvas.draft_changes(journey))

    def canvas_publish(self, request, journey: Journey) -> JsonResponse:
        try:
            version = journey_publish_draft(journey=journey, by=request.user)
        except DefinitionInvalid as exc:
            return _invalid(exc.problems, canvas.pending(journey))
        return JsonResponse(
            {
                "version": version.number,
                "journey": canvas.journey_json(
                    Journey.objects.select_related("current_version").get(pk=journey.pk)
                ),
            }
        )

    def canvas_simulate(self, request, journey: Journey) -> JsonResponse:
        body = _json_body(request)
        form = SimulateForm(
            {
                "days": body.get("days", SimulateForm.base_fields["days"].initial),
                "sample": body.get("sample", SimulateForm.base_fields["sample"].initial),
            }
        )
        if not form.is_valid():
            messages_ = [f"{name}: {' '.join(e)}" for name, e in form.errors.items()]
            raise BadRequest(" ".join(messages_))
        draft = canvas.pending(journey)
        try:
            result = simulation.simulate(
                journey,
                days=form.cleaned_data["days"],
                sample=form.cleaned_data["sample"],
                definition=draft,
            )
        except DefinitionInvalid as exc:
            return _invalid(exc.problems, draft)
        held = {*result["totals"]["held"]}
        return JsonResponse({**result, "hold_reasons": {code: hold_reason(code) for code in held}})

    def canvas_counts(self, request, journey: Journey) -> JsonResponse:
        of = request.GET.get("of", "published")
        if of not in ("published", "draft"):
            raise BadRequest("Counts are of the published version or the draft.")
        return JsonResponse(canvas.counts(journey, of=of))

    def canvas_preview(self, request, journey: Journey) -> JsonResponse:
        template = (request.GET.get("template") or "").strip()
        if not template:
            raise BadRequest("Choose a template to preview.")
        try:
            shown = canvas.preview(
                journey=journey,
                template=template,
                step=(request.GET.get("step") or "").strip() or None,
                channel=(request.GET.get("channel") or "").strip(),
                locale=(request.GET.get("locale") or "").strip(),
                customer=(request.GET.get("customer") or "").strip() or None,
            )
        except canvas.PreviewRefused as exc:
            raise BadRequest(str(exc)) from None
        return JsonResponse(shown)

    def canvas_versions(self, request, journey: Journey) -> JsonResponse:
        return JsonResponse(canvas.versions(journey), safe=False)


@admin.register(Journey)
class JourneyAdmin(JourneyCanvasMixin, admin.ModelAdmin):
    form = JourneyForm
    inlines = (StepInline,)
    change_form_template = "admin/journeys/journey/change_form.html"
    change_list_template = "admin/journeys/journey/change_list.html"
    list_display = (
        "name",
        "key",
        "status",
        "starts_when",
        "version",
        "active_now",
        "updated_at",
        "canvas_link",
    )
    list_filter = ("status", TriggerKindFilter, "topic")
    search_fields = ("key", "name", "description")
    prepopulated_fields = {"key": ("name",)}
    readonly_fields = ("status", "version", "created_at", "updated_at", "version_history")
    fieldsets = (
        (None, {"fields": ("name", "key", "description", ("status", "version"))}),
        ("What customers read", {"fields": ("customer_name", "customer_names")}),
        ("Sending", {"fields": ("topic", "priority", "on_hold")}),
        ("Who enters", {"fields": ("trigger_kind", "entry", "entry_days")}),
        *registry.fieldsets(),
        (
            "Leaving and the goal",
            {
                "fields": (
                    "exit_events_rows",
                    "goal_event",
                    ("goal_within_hours", "goal_exits"),
                )
            },
        ),
        ("Version history", {"fields": ("version_history",)}),
        ("History", {"classes": ("collapse",), "fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("current_version", "topic")
            # A correlated count over the partial index of active enrollments: a join
            # and GROUP BY would read every enrollment the journey ever had.
            .annotate(
                _active=Coalesce(
                    Subquery(
                        Enrollment.objects.filter(
                            journey=OuterRef("pk"), status=Enrollment.Status.ACTIVE
                        )
                        .order_by()
                        .values("journey")
                        .annotate(n=Count("*"))
                        .values("n")
                    ),
                    0,
                )
            )
        )

    @admin.display(description="starts when", ordering="trigger_kind")
    def starts_when(self, obj: Journey) -> str:
        kind = registry.get(obj.trigger_kind)
        return kind.LABEL if kind else obj.trigger_kind

    @admin.display(description="version", ordering="current_version__number")
    def version(self, obj: Journey) -> str:
        return f"v{obj.current_version.number}" if obj.current_version_id else "not published"

    @admin.display(description="on it now", ordering="_active")
    def active_now(self, obj: Journey) -> int:
        return obj._active

    @admin.display(description="published versions")
    def version_history(self, obj: Journey):
        """Who published what and when, newest first (the canvas's versions list)."""
        rows = canvas.versions(obj) if obj.pk else []
        if not rows:
            return "Not published yet."
        return html_table(
            ("version", "published", "by", "steps", "what changed"),
            (
                (
                    f"v{r['number']}" + (" (live)" if r["current"] else ""),
                    date_format(
                        localtime(dt.datetime.fromisoformat(r["published_at"])),
                        "DATETIME_FORMAT",
                    ),
                    r["published_by"],
                    r["steps"],
                    r["summary"],
                )
                for r in rows
            ),
        )

    @admin.display(description="canvas")
    def canvas_link(self, obj: Journey):
        url = reverse("admin:journeys_journey_canvas", args=[obj.pk])
        return format_html('<a href="{}">Open the canvas</a>', url)

    # --- saving ----------------------------------------------------------------------

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        journey = form.instance
        if journey.status not in (Journey.Status.ACTIVE, Journey.Status.PAUSED):
            return
        before = journey.current_version_id
        # The forms ran the same checks; a refusal here means a template vanished meanwhile.
        try:
            version = journey_publish(journey=journey, by=request.user)
        except DefinitionInvalid as exc:
            self.message_user(
                request,
                "Saved as a draft but not published: "
                + " ".join(definition_problems_text(exc.problems)),
                messages.ERROR,
            )
            return
        if version.pk == before:
            return
        others = stats.active_on_other_versions(journey, version)
        self.message_user(
            request,
            f"Published version {version.number}; {others} customer"
            f"{'' if others == 1 else 's'} on earlier versions finish on them.",
            messages.SUCCESS,
        )

    # --- the page ----------------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The page's buttons (activate, pause, the canvas...) need the journey; the graph
        # with its live counts is the canvas's.
        journey = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if journey is not None:
            extra["journey"] = journey
        return super().change_view(request, object_id, form_url, extra)

    # --- buttons ----------------------------------------------------------------------

    def get_urls(self):
        def view(func):
            return self.admin_site.admin_view(func)

        return [
            path("import/", view(self.import_view), name="journeys_journey_import"),
            path("<int:pk>/activate/", view(self.activate_view), name="journeys_journey_activate"),
            path("<int:pk>/pause/", view(self.pause_view), name="journeys_journey_pause"),
            path("<int:pk>/archive/", view(self.archive_view), name="journeys_journey_archive"),
            path("<int:pk>/simulate/", view(self.simulate_view), name="journeys_journey_simulate"),
            path(
                "<int:pk>/analytics/", view(self.analytics_view), name="journeys_journey_analytics"
            ),
            path("<int:pk>/export/", view(self.export_view), name="journeys_journey_export"),
            path(
                "<int:pk>/test-send/", view(self.test_send_view), name="journeys_journey_test_send"
            ),
            *self.canvas_urls(view),
            *super().get_urls(),
        ]

    def _journey(self, request, pk: int, *, change: bool = True) -> Journey:
        journey = get_object_or_404(Journey, pk=pk)
        allowed = (
            self.has_change_permission(request, journey)
            if change
            else self.has_view_permission(request, journey)
        )
        if not allowed:
            raise PermissionDenied
        return journey

    def _back(self, journey: Journey) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:journeys_journey_change", args=[journey.pk]))

    def _refuse(self, request, intro: str, problems) -> None:
        lines = definition_problems_text(problems)
        self.message_user(request, f"{intro} Fix these first:", messages.ERROR)
        for line in lines:
            self.message_user(request, line, messages.ERROR)

    def activate_view(self, request, pk: int):
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        journey = self._journey(request, pk)
        was = journey.status
        try:
            version = journey_activate(journey=journey, by=request.user)
        except DefinitionInvalid as exc:
            self._refuse(request, "The journey was not activated.", exc.problems)
            return self._back(journey)
        verb = "Resumed" if was == Journey.Status.PAUSED else "Activated"
        self.message_user(
            request,
            f"{verb}: version {version.number} is live; new customers enter on it.",
            messages.SUCCESS,
        )
        return self._back(journey)

    def pause_view(self, request, pk: int):
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        journey = self._journey(request, pk)
        if journey.status != Journey.Status.ACTIVE:
            self.message_user(request, "Only an active journey can be paused.", messages.WARNING)
            return self._back(journey)
        journey_pause(journey=journey)
        waiting = journey.enrollments.filter(status=Enrollment.Status.ACTIVE).count()
        self.message_user(
            request,
            f"Paused: nobody new enters, and {waiting} customer"
            f"{'' if waiting == 1 else 's'} on it wait where they are until you activate it again.",
            messages.SUCCESS,
        )
        return self._back(journey)

    def archive_view(self, request, pk: int):
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        journey = self._journey(request, pk)
        if journey.status == Journey.Status.ARCHIVED:
            self.message_user(request, "The journey is already archived.", messages.INFO)
            return self._back(journey)
        if journey.status not in (Journey.Status.PAUSED, Journey.Status.DRAFT):
            self.message_user(
                request,
                "Only a paused or draft journey can be archived; pause it first.",
                messages.WARNING,
            )
            return self._back(journey)
        journey_archive(journey=journey)
        waiting = journey.enrollments.filter(status=Enrollment.Status.ACTIVE).count()
        note = f" The {waiting} customers already on it stay where they are." if waiting else ""
        if waiting == 1:
            note = " The 1 customer already on it stays where they are."
        self.message_user(
            request, f"Archived: nobody enters {journey.name!r} any more.{note}", messages.SUCCESS
        )
        return self._back(journey)

    def analytics_view(self, request, pk: int):
        from orchestrator.analytics.admin import journey_analytics_view

        return journey_analytics_view(self, request, self._journey(request, pk, change=False))

    def simulate_view(self, request, pk: int):
        journey = self._journey(request, pk, change=False)
        # Reads only: the forecast runs on GET, with the defaults until the form is sent.
        form = SimulateForm(request.GET if request.GET else None)
        result, problems = None, []
        if not form.is_bound or form.is_valid():
            days = form.cleaned_data["days"] if form.is_bound else form.fields["days"].initial
            sample = form.cleaned_data["sample"] if form.is_bound else form.fields["sample"].initial
            try:
                result = simulation.simulate(
                    journey, days=days, sample=sample, definition=canvas.pending(journey)
                )
            except DefinitionInvalid as exc:
                problems = definition_problems_text(exc.problems)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Simulate: {journey.name}",
            "journey": journey,
            "form": form,
            "problems": problems,
            "draft_note": self._draft_note(journey),
            **(self.forecast_context(result) if result else {}),
        }
        return TemplateResponse(request, "admin/journeys/journey/simulate.html", context)

    def _draft_note(self, journey: Journey) -> str:
        version = journey.current_version
        if version is None:
            return "It has no published version yet."
        if not canvas.has_unpublished_changes(journey):
            return f"It is the same as published version {version.number}."
        if journey.draft_definition is not None:
            return (
                f"It is the canvas's saved draft, which differs from published version "
                f"{version.number}: customers get that version until the draft is published."
            )
        return (
            f"It differs from published version {version.number}, which is what "
            "customers get until you save or activate the draft."
        )

    def forecast_context(self, result: dict) -> dict:
        """The simulation as table rows, a chart and sentences."""
        totals = result["totals"]
        channels = sorted(totals["messages"])
        reasons = sorted(totals["held"])

        def held_cell(day: dict, code: str) -> str:
            held = day["held"].get(code, 0)
            if not held:
                return ""
            parts = [
                f"{n} {word}" for word in ("deferred", "dropped") if (n := day[word].get(code))
            ]
            return f"{held} ({', '.join(parts)})" if parts else str(held)

        rows = [
            {
                "date": _date(day),
                "entries": day["entries"],
                "messages": [day["messages"].get(c, 0) for c in channels],
                "held": [held_cell(day, code) for code in reasons],
            }
            for day in result["days"]
        ]
        labels = [f"{d.day} {d:%b}" for d in map(_date, result["days"])]
        chart = bar_chart(
            labels,
            [
                Series("Entries", [day["entries"] for day in result["days"]]),
                Series("Messages", [sum(day["messages"].values()) for day in result["days"]]),
            ],
            title="Forecast entries and messages per day",
            stacked=False,
        )
        sample = result["sample"]
        if not sample["of"]:
            sample_text = "No entrants are expected in these days."
        else:
            sample_text = (
                f"Simulated {sample['customers']:,} of {sample['of']:,} expected entrant"
                f"{'' if sample['of'] == 1 else 's'}."
            )
        return {
            "result": result,
            "channels": channels,
            "reasons": [hold_reason(code) for code in reasons],
            "rows": rows,
            "total_row": {
                "entries": totals["entries"],
                "messages": [totals["messages"][c] for c in channels],
                "held": [held_cell(totals, code) for code in reasons],
            },
            "total_messages": sum(totals["messages"].values()),
            "total_held": sum(totals["held"].values()),
            "chart": chart,
            "sample_text": sample_text,
        }

    def export_view(self, request, pk: int):
        journey = self._journey(request, pk, change=False)
        body = json.dumps(export(journey), indent=2, ensure_ascii=False)
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="journey-{journey.key}.json"'
        return response

    def test_send_view(self, request, pk: int):
        journey = self._journey(request, pk)
        result = None
        form = TestSendForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            result = journey_test_send(journey=journey, customer=form.cleaned_data["customer"])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Test send: {journey.name}",
            "journey": journey,
            "form": form,
            "result": result,
            "sent": [
                (key, message, admin_link(message, f"#{message.pk}"))
                for key, message in (result.messages if result else [])
            ],
        }
        return TemplateResponse(request, "admin/journeys/journey/test_send.html", context)

    def import_view(self, request):
        if not self.has_add_permission(request) or not self.has_change_permission(request):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        problems: list[str] = []
        if request.method == "POST" and form.is_valid():
            definition = form.cleaned_data["definition"]
            existed = Journey.objects.filter(key=definition.get("key")).first()
            try:
                journey = journey_save(definition, by=request.user)
            except DefinitionInvalid as exc:
                problems = definition_problems_text(exc.problems)
            else:
                verb = "Replaced the draft of" if existed else "Imported"
                note = ""
                if journey.status in (Journey.Status.ACTIVE, Journey.Status.PAUSED):
                    note = f" It is {journey.status}, so version "
                    note += f"{journey.current_version.number} is now published."
                self.message_user(request, f"{verb} {journey.name!r}.{note}", messages.SUCCESS)
                return self._back(journey)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import a journey from JSON",
            "form": form,
            "problems": problems,
        }
        return TemplateResponse(request, "admin/journeys/journey/import.html", context)


def _date(day: dict) -> dt.date:
    return dt.date.fromisoformat(day["date"])


class StepRunInline(ReadOnlyInline):
    model = StepRun
    fields = ("at", "step", "kind", "outcome", "message", "details")
    readonly_fields = fields
    show_change_link = False
    ordering = ("at", "id")
    verbose_name_plural = "Steps taken"

    @admin.display(description="message")
    def message(self, obj: StepRun):
        if not obj.message_id:
            return ""
        url = reverse("admin:delivery_message_change", args=[obj.message_id])
        return admin_link_url(url, f"#{obj.message_id}")

    @admin.display(description="details")
    def details(self, obj: StepRun):
        return pretty_json(obj.detail)


def admin_link_url(url: str, label: str):
    return format_html('<a href="{}">{}</a>', url, label)


@admin.register(Enrollment)
class EnrollmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "journey",
        "customer_link",
        "status",
        "step",
        "due_at",
        "exit_reason",
        "converted_at",
        "version_number",
        "entered_at",
    )
    list_filter = ("journey", "status", ("converted_at", admin.EmptyFieldListFilter))
    search_fields = ("=customer__external_id", "occurrence", "step")
    list_select_related = ("journey", "customer", "version")
    date_hierarchy = "entered_at"
    inlines = (StepRunInline,)
    fields = (
        "journey",
        "customer_link",
        "version_number",
        "occurrence",
        ("status", "step", "waiting", "waiting_for"),
        ("entered_at", "due_at", "finished_at"),
        ("exit_reason", "converted_at", "arm"),
        "context_shown",
    )
    readonly_fields = tuple(
        name for item in fields for name in (item if isinstance(item, tuple) else (item,))
    )

    @admin.display(description="customer", ordering="customer__external_id")
    def customer_link(self, obj: Enrollment):
        return admin_link(obj.customer, obj.customer.external_id)

    @admin.display(description="version", ordering="version__number")
    def version_number(self, obj: Enrollment) -> str:
        return f"v{obj.version.number}"

    @admin.display(description="context")
    def context_shown(self, obj: Enrollment):
        return pretty_json(obj.context)


@admin.register(StepRun)
class StepRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("at", "journey", "enrollment_link", "step", "kind", "outcome", "message_id")
    list_filter = ("journey", "kind", "outcome")
    search_fields = ("=enrollment__id", "=message_id", "step")
    list_select_related = ("journey",)
    date_hierarchy = "at"

    @admin.display(description="enrollment", ordering="enrollment_id")
    def enrollment_link(self, obj: StepRun):
        url = reverse("admin:journeys_enrollment_change", args=[obj.enrollment_id])
        return admin_link_url(url, f"#{obj.enrollment_id}")
