"""/api/v1/journeys: the journey definition as code, plus activate, pause and simulate.

The body is the JSON definition the admin exports and imports (``journeys.definition``).
The serializers here only check JSON types, so a number where a string belongs is a
field error instead of a crash deep in validation; what a definition *means* (a step
that leads nowhere, an unknown template) is judged by ``journeys.definition.validate``,
whose problems come back as 400 fields named like ``steps.remind`` or ``trigger.event``.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from journeys.definition import export
from journeys.models import Journey, StepKind
from journeys.problems import DefinitionInvalid
from journeys.services import journey_activate, journey_delete, journey_pause, journey_save
from journeys.simulation import MAX_DAYS, MAX_SAMPLE, simulate
from journeys.triggers import registry
from orchestrator.api.errors import ApiError
from orchestrator.api.serializers import (
    BoundedListField,
    JsonObjectField,
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictIntegerField,
)
from orchestrator.api.views import ApiView, _body_with_key, _errors, _key_parameter, _valid

#: Settings that name something (a template, a channel, an event...) and so must be
#: text; validation looks them up in sets and dicts, where a list or an object cannot go.
_TEXT_SETTINGS: dict[str, tuple[str, ...]] = {
    StepKind.SEND: ("template", "channel", "fallback_channel"),
    StepKind.DIGEST: ("template", "channel", "key"),
    StepKind.WAIT: ("mode", "time", "attribute", "from"),
    StepKind.WAIT_FOR_EVENT: ("event",),
    StepKind.BRANCH: ("match",),
    StepKind.UPDATE_ATTRIBUTE: ("name", "from_context"),
    StepKind.WEBHOOK: ("url",),
}
_TEXT_TRIGGER_SETTINGS = (
    "event",
    "source",
    "attribute",
    "property",
    "product_property",
    "cron",
    "timezone",
)


class NumberField(serializers.FloatField):
    """A JSON number (not a string, not a boolean); keeps ints as ints."""

    default_error_messages = {"invalid": "Must be a number."}

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


def _text_settings(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, list[str]]:
    return {
        name: ["Must be a string."]
        for name in names
        if data.get(name) is not None and not isinstance(data[name], str)
    }


class JourneyEntrySerializer(serializers.Serializer):
    rule = StrictChoiceField(choices=Journey.Entry.choices, required=False)
    days = StrictIntegerField(
        required=False, allow_null=True, min_value=1, help_text="N for once_per."
    )


class JourneyTriggerSerializer(serializers.Serializer):
    """The trigger's kind, and its settings alongside (event, filter, cron, segment...)."""

    kind = StrictChoiceField(choices=registry.choices())

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        checked = super().to_internal_value(data)
        problems = _text_settings(data, _TEXT_TRIGGER_SETTINGS)
        for name in ("filter", "segment"):
            if data.get(name) is not None and not isinstance(data[name], list):
                problems[name] = ["Must be a list of conditions."]
        if problems:
            raise serializers.ValidationError(problems)
        return {**data, **checked}


class JourneyExitEventSerializer(serializers.Serializer):
    event = StrictCharField(max_length=200)
    match = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=200)


class JourneyGoalSerializer(serializers.Serializer):
    event = StrictCharField(max_length=200)
    within_hours = NumberField(required=False, allow_null=True)
    exits = StrictBooleanField(required=False)


class JourneyStepSerializer(serializers.Serializer):
    key = StrictCharField(max_length=50)
    kind = StrictChoiceField(choices=StepKind.choices)
    label = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=200)
    next = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=50)
    alt_next = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=50)
    config = JsonObjectField(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        config = attrs.get("config") or {}
        problems = _text_settings(config, _TEXT_SETTINGS.get(attrs["kind"], ()))
        if problems:
            raise serializers.ValidationError({"config": problems})
        return attrs


class JourneySerializer(serializers.Serializer):
    """A journey definition. Only JSON types are checked here; meaning by validation."""

    key = StrictCharField(required=False, max_length=100, help_text="Unique; URL-safe.")
    name = StrictCharField(required=False, max_length=200)
    description = StrictCharField(required=False, allow_blank=True, allow_null=True)
    topic = StrictCharField(required=False, max_length=100, help_text="Topic key.")
    priority = StrictIntegerField(required=False, min_value=0, max_value=9)
    entry = JourneyEntrySerializer(required=False, allow_null=True)
    trigger = JourneyTriggerSerializer(required=False)
    exit_events = BoundedListField(
        child=JourneyExitEventSerializer(), required=False, allow_null=True, max_length=50
    )
    goal = JourneyGoalSerializer(required=False, allow_null=True)
    on_hold = StrictChoiceField(choices=Journey.OnHold.choices, required=False)
    steps = BoundedListField(child=JourneyStepSerializer(), required=False, max_length=200)
    status = serializers.CharField(read_only=True)
    version = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="The published version new entries take."
    )


class JourneySummarySerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    version = serializers.IntegerField(allow_null=True)
    trigger_kind = serializers.CharField()
    active_enrollments = serializers.IntegerField()


class JourneyListSerializer(serializers.Serializer):
    results = JourneySummarySerializer(many=True)


class JourneyArchivedSerializer(serializers.Serializer):
    key = serializers.CharField()
    status = serializers.CharField()
    message = serializers.CharField()


class SimulateInSerializer(serializers.Serializer):
    days = StrictIntegerField(required=False, default=14, min_value=1, max_value=MAX_DAYS)
    sample = StrictIntegerField(required=False, default=2000, min_value=1, max_value=MAX_SAMPLE)


class SimulationDaySerializer(serializers.Serializer):
    date = serializers.DateField()
    entries = serializers.IntegerField()
    messages = serializers.DictField(child=serializers.IntegerField())
    held = serializers.DictField(
        child=serializers.IntegerField(),
        help_text='By reason: "quiet_hours", "rule:<key>", "consent", "suppressed"...',
    )
    deferred = serializers.DictField(child=serializers.IntegerField())
    dropped = serializers.DictField(child=serializers.IntegerField())


class SimulationTotalsSerializer(serializers.Serializer):
    entries = serializers.IntegerField()
    messages = serializers.DictField(child=serializers.IntegerField())
    held = serializers.DictField(child=serializers.IntegerField())
    deferred = serializers.DictField(child=serializers.IntegerField())
    dropped = serializers.DictField(child=serializers.IntegerField())


class SimulationSampleSerializer(serializers.Serializer):
    customers = serializers.IntegerField()
    of = serializers.IntegerField()


class SimulationSerializer(serializers.Serializer):
    days = SimulationDaySerializer(many=True)
    totals = SimulationTotalsSerializer()
    sample = SimulationSampleSerializer()
    assumptions = serializers.ListField(child=serializers.CharField())


# --- helpers ---------------------------------------------------------------------------


def _definition(data: Any) -> dict[str, Any]:
    """The body after the type check; the raw object, so trigger and step settings stay."""
    if not isinstance(data, dict):
        raise ApiError(code="invalid", message="The body must be a JSON object (a definition).")
    _valid(JourneySerializer, data)
    return {k: v for k, v in data.items() if k not in ("status", "version")}


def _via(request: Request) -> str:
    """Who publishes through the API, as the version history shows it."""
    name = getattr(request.auth, "name", "")
    return f"API key {name}" if name else "API"


def _save(request: Request, definition: dict[str, Any], *, key: str | None = None) -> Journey:
    try:
        return journey_save(definition, key=key, via=_via(request))
    except DefinitionInvalid as exc:
        raise _invalid(exc) from None


def _invalid(exc: DefinitionInvalid) -> ApiError:
    return ApiError(
        code="invalid", message="The journey definition has problems.", fields=exc.as_fields()
    )


def _journey(key: str) -> Journey:
    journey = Journey.objects.select_related("topic", "current_version").filter(key=key).first()
    if journey is None:
        raise NotFound(f"No journey {key!r}.")
    return journey


def _exported(journey: Journey) -> dict[str, Any]:
    journey = Journey.objects.select_related("topic", "current_version").get(pk=journey.pk)
    return export(journey)


# --- views -----------------------------------------------------------------------------

_KEY = _key_parameter("key", "The journey key.")


class JourneyListView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="journeys_list",
        tags=["journeys"],
        responses={200: JourneyListSerializer, **_errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        journeys = Journey.objects.select_related("current_version").annotate(
            active_enrollments=Count("enrollments", filter=Q(enrollments__status="active"))
        )
        return Response(
            {
                "results": [
                    {
                        "key": j.key,
                        "name": j.name,
                        "status": j.status,
                        "version": j.current_version.number if j.current_version_id else None,
                        "trigger_kind": j.trigger_kind,
                        "active_enrollments": j.active_enrollments,
                    }
                    for j in journeys
                ]
            }
        )

    @extend_schema(
        operation_id="journeys_create",
        tags=["journeys"],
        summary="Create a journey (a draft) from its definition",
        request=JourneySerializer,
        responses={201: JourneySerializer, **_errors(400, 401, 403, 409, 413)},
    )
    def post(self, request: Request) -> Response:
        definition = _definition(request.data)
        key = definition.get("key")
        if Journey.objects.filter(key=key).exists():
            raise ApiError(
                code="already_exists",
                message=f"A journey {key!r} exists; PUT /api/v1/journeys/{key} replaces it.",
                status_code=409,
            )
        journey = _save(request, definition)
        return Response(_exported(journey), status=status.HTTP_201_CREATED)


class JourneyDetailView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="journeys_retrieve",
        tags=["journeys"],
        parameters=[_KEY],
        responses={200: JourneySerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, key: str) -> Response:
        return Response(export(_journey(key)))

    @extend_schema(
        operation_id="journeys_put",
        tags=["journeys"],
        summary="Replace a journey's draft (created if new); an active one publishes a "
        "new version, which only new entries take",
        parameters=[_KEY],
        request=JourneySerializer,
        responses={
            200: JourneySerializer,
            201: JourneySerializer,
            **_errors(400, 401, 403, 413),
        },
    )
    def put(self, request: Request, key: str) -> Response:
        definition = _definition(_body_with_key(request.data, key))
        created = not Journey.objects.filter(key=key).exists()
        journey = _save(request, definition, key=key)
        return Response(
            _exported(journey),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="journeys_delete",
        tags=["journeys"],
        summary="Delete a journey nobody entered; one with enrollments is archived instead",
        parameters=[_KEY],
        responses={
            204: None,
            200: JourneyArchivedSerializer,
            **_errors(401, 403, 404),
        },
    )
    def delete(self, request: Request, key: str) -> Response:
        journey = _journey(key)
        if journey_delete(journey=journey):
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(
            {
                "key": key,
                "status": Journey.Status.ARCHIVED,
                "message": "Customers have entered this journey, so it was archived instead of "
                "deleted: nobody new enters, and its history is kept.",
            }
        )


class JourneyActivateView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="journeys_activate",
        tags=["journeys"],
        summary="Publish the draft and start (or resume) the journey",
        parameters=[_KEY],
        request=None,
        responses={200: JourneySerializer, **_errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, key: str) -> Response:
        journey = _journey(key)
        try:
            journey_activate(journey=journey, via=_via(request))
        except DefinitionInvalid as exc:
            raise _invalid(exc) from None
        return Response(_exported(journey))


class JourneyPauseView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="journeys_pause",
        tags=["journeys"],
        summary="Hold the journey: nobody enters, those on it wait where they are",
        parameters=[_KEY],
        request=None,
        responses={200: JourneySerializer, **_errors(401, 403, 404)},
    )
    def post(self, request: Request, key: str) -> Response:
        journey = _journey(key)
        journey_pause(journey=journey)
        return Response(_exported(journey))


class JourneySimulateView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="journeys_simulate",
        tags=["journeys"],
        summary="Forecast the draft on current data: entries per day, messages per "
        "channel, holds by reason. Sends and writes nothing.",
        parameters=[_KEY],
        request=SimulateInSerializer,
        responses={200: SimulationSerializer, **_errors(400, 401, 403, 404, 413)},
    )
    def post(self, request: Request, key: str) -> Response:
        journey = _journey(key)
        options = _valid(SimulateInSerializer, request.data)
        try:
            result = simulate(journey, days=options["days"], sample=options["sample"])
        except DefinitionInvalid as exc:
            raise _invalid(exc) from None
        return Response(result)
