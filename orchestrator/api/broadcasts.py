"""/api/v1/broadcasts: a broadcast as code, plus schedule, cancel, test and forecast.

The body names the template, the audience (``{"segment": key}`` or ``{"topic": key}``),
the schedule (``send_at``, or ``local_time`` on a date in each customer's own zone;
neither: as soon as it is scheduled), an optional rate per minute, the deadline
(``expires_at``) and an optional A/B test. ``GET /{key}`` shows progress and results.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator.api.errors import ApiError
from orchestrator.api.serializers import (
    AwareDateTimeField,
    BoundedListField,
    JsonObjectField,
    RequestedChannelField,
    StrictCharField,
    StrictChoiceField,
    StrictIntegerField,
    StrictSlugField,
)
from orchestrator.api.views import ApiView, _body_with_key, _errors, _key_parameter, _valid
from orchestrator.audience.models import Customer
from orchestrator.broadcasts.audience import AudienceMissing
from orchestrator.broadcasts.forecast import DEFAULT_SAMPLE, MAX_SAMPLE, broadcast_forecast
from orchestrator.broadcasts.models import Broadcast
from orchestrator.broadcasts.selectors import broadcast_progress, broadcast_results
from orchestrator.broadcasts.services import (
    BroadcastInvalid,
    broadcast_cancel,
    broadcast_delete,
    broadcast_save,
    broadcast_schedule,
    broadcast_test_send,
)
from orchestrator.consent.models import Topic
from orchestrator.delivery.models import MessageTemplate
from orchestrator.delivery.services import SendRefused

# --- bodies ----------------------------------------------------------------------------


class AudienceSerializer(serializers.Serializer):
    """Exactly one of the two."""

    segment = StrictSlugField(required=False, max_length=100, help_text="A saved segment's key.")
    topic = StrictSlugField(
        required=False, max_length=100, help_text="A topic's key: its subscribers."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if len(attrs) != 1:
            raise serializers.ValidationError("Give exactly one of 'segment' and 'topic'.")
        return attrs


class LocalTimeSerializer(serializers.Serializer):
    date = serializers.DateField(help_text="The date, in each customer's own time zone.")
    time = StrictCharField(max_length=5, help_text="HH:MM, e.g. 09:00.")

    def validate_time(self, value: str) -> dt.time:
        try:
            return dt.datetime.strptime(value, "%H:%M").time()  # noqa: DTZ007 (a wall time)
        except ValueError:
            raise serializers.ValidationError("Must be HH:MM, e.g. 09:00.") from None


class AbTestSerializer(serializers.Serializer):
    share = StrictIntegerField(
        min_value=1, max_value=100, help_text="Percent of the audience in the test."
    )
    kind = StrictChoiceField(choices=Broadcast.AbKind.choices, required=False)
    template = StrictSlugField(required=False, max_length=100, help_text="Variant B's template.")
    subject = StrictCharField(required=False, max_length=500, help_text="Variant B's subject.")
    wait_minutes = StrictIntegerField(
        required=False, min_value=1, max_value=60 * 24 * 14, help_text="Before the winner."
    )
    winner_by = StrictChoiceField(choices=Broadcast.AbMetric.choices, required=False)
    conversion_event = StrictCharField(required=False, max_length=200)


class BroadcastInSerializer(serializers.Serializer):
    key = StrictSlugField(max_length=100)
    name = StrictCharField(max_length=200)
    template = StrictSlugField(max_length=100, help_text="Template key.")
    topic = StrictSlugField(
        required=False, max_length=100, help_text="Topic key (default: the audience's topic, "
        "else the template's)."
    )  # fmt: skip
    audience = AudienceSerializer()
    channel = RequestedChannelField(required=False)
    data = JsonObjectField(required=False)
    send_at = AwareDateTimeField(required=False, allow_null=True)
    local_time = LocalTimeSerializer(required=False, allow_null=True)
    rate_per_minute = StrictIntegerField(
        required=False, allow_null=True, min_value=1, max_value=1_000_000
    )
    expires_at = AwareDateTimeField(required=False, allow_null=True)
    priority = StrictIntegerField(required=False, min_value=0, max_value=9)
    ab_test = AbTestSerializer(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("send_at") and attrs.get("local_time"):
            raise serializers.ValidationError(
                {"local_time": ["Give send_at or local_time, not both."]}
            )
        return attrs


class BroadcastPutSerializer(BroadcastInSerializer):
    key = StrictSlugField(max_length=100, required=False)


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    waiting = serializers.IntegerField()
    sending = serializers.IntegerField()
    sent = serializers.IntegerField()
    failed = serializers.IntegerField()
    suppressed = serializers.IntegerField()
    expired = serializers.IntegerField()
    canceled = serializers.IntegerField()
    held = serializers.DictField(
        child=serializers.IntegerField(), help_text='By reason: "consent", "quiet_hours"...'
    )
    by_status = serializers.DictField(child=serializers.IntegerField())


class VariantResultsSerializer(serializers.Serializer):
    variant = serializers.CharField(help_text='"a", "b", or "" (the rest, or no test).')
    messages = serializers.IntegerField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    clicks = serializers.IntegerField()
    unsubscribes = serializers.IntegerField()
    conversions = serializers.IntegerField()
    click_rate = serializers.FloatField(allow_null=True)
    conversion_rate = serializers.FloatField(allow_null=True)


class ResultsSerializer(serializers.Serializer):
    total = VariantResultsSerializer()
    variants = VariantResultsSerializer(many=True)


class LocalTimeOutSerializer(serializers.Serializer):
    date = serializers.DateField()
    time = serializers.CharField()


class AbTestOutSerializer(serializers.Serializer):
    share = serializers.IntegerField()
    kind = serializers.CharField()
    template = serializers.CharField(allow_null=True)
    subject = serializers.CharField()
    wait_minutes = serializers.IntegerField()
    winner_by = serializers.CharField()
    conversion_event = serializers.CharField()
    winner = serializers.CharField(allow_null=True)


class AudienceOutSerializer(serializers.Serializer):
    segment = serializers.CharField(required=False)
    topic = serializers.CharField(required=False)


class BroadcastSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    template = serializers.CharField()
    topic = serializers.CharField()
    audience = AudienceOutSerializer()
    channel = serializers.CharField()
    data = serializers.DictField()
    send_at = serializers.DateTimeField(allow_null=True)
    local_time = LocalTimeOutSerializer(allow_null=True)
    rate_per_minute = serializers.IntegerField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    priority = serializers.IntegerField()
    ab_test = AbTestOutSerializer(allow_null=True)
    status = serializers.CharField()
    due_at = serializers.DateTimeField(allow_null=True)
    progress = ProgressSerializer()
    results = ResultsSerializer()


class BroadcastSummarySerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    due_at = serializers.DateTimeField(allow_null=True)


class BroadcastListSerializer(serializers.Serializer):
    results = BroadcastSummarySerializer(many=True)


class CancelSerializer(serializers.Serializer):
    key = serializers.CharField()
    status = serializers.CharField()
    canceled = serializers.IntegerField(help_text="Messages canceled before they went out.")


class TestInSerializer(serializers.Serializer):
    customers = BoundedListField(
        child=StrictCharField(max_length=255),
        min_length=1,
        max_length=20,
        help_text="External ids of the customers to send each variant to.",
    )


class TestMessageSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    customer = serializers.CharField()
    channel = serializers.CharField()
    status = serializers.CharField()


class TestOutSerializer(serializers.Serializer):
    messages = TestMessageSerializer(many=True)


class ForecastInSerializer(serializers.Serializer):
    sample = StrictIntegerField(
        required=False, default=DEFAULT_SAMPLE, min_value=1, max_value=MAX_SAMPLE
    )


class ForecastSerializer(serializers.Serializer):
    audience = serializers.IntegerField()
    sample = serializers.IntegerField()
    messages = serializers.DictField(child=serializers.IntegerField())
    held = serializers.DictField(child=serializers.IntegerField())
    deferred = serializers.DictField(child=serializers.IntegerField())
    dropped = serializers.DictField(child=serializers.IntegerField())
    unreachable = serializers.IntegerField()
    expired = serializers.IntegerField()
    assumptions = serializers.ListField(child=serializers.CharField())


# --- helpers ---------------------------------------------------------------------------


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """Model values from a checked body; unknown template or topic keys are field errors."""
    problems: dict[str, list[str]] = {}
    template = MessageTemplate.objects.filter(key=body["template"]).first()
    if template is None:
        problems["template"] = [f"No template {body['template']!r}."]
    audience = body["audience"]
    topic_key = body.get("topic") or audience.get("topic")
    topic = None
    if topic_key:
        topic = Topic.objects.filter(key=topic_key).first()
        if topic is None:
            problems["topic" if body.get("topic") else "audience.topic"] = [
                f"No topic {topic_key!r}."
            ]
    elif template is not None:
        topic = template.topic
        if topic is None:
            problems["topic"] = ["Required: the template has no default topic."]
    ab = body.get("ab_test") or {}
    ab_template = None
    if ab.get("template"):
        ab_template = MessageTemplate.objects.filter(key=ab["template"]).first()
        if ab_template is None:
            problems["ab_test.template"] = [f"No template {ab['template']!r}."]
    if problems:
        raise ApiError(code="invalid", message="Unknown references.", fields=problems)
    local = body.get("local_time")
    if body.get("send_at"):
        schedule = Broadcast.Schedule.AT
    elif local:
        schedule = Broadcast.Schedule.LOCAL_TIME
    else:
        schedule = Broadcast.Schedule.NOW
    kind = ab.get("kind") or (
        Broadcast.AbKind.SUBJECT if ab.get("subject") and not ab_template else "template"
    )
    return {
        "name": body["name"],
        "template": template,
        "topic": topic,
        "audience": "segment" if "segment" in audience else "topic",
        "segment": audience.get("segment", ""),
        "channel": body.get("channel") or "preferred",
        "data": body.get("data") or {},
        "schedule": schedule,
        "send_at": body.get("send_at"),
        "local_date": local["date"] if local else None,
        "local_time": local["time"] if local else None,
        "rate_per_minute": body.get("rate_per_minute"),
        "expires_at": body.get("expires_at"),
        "priority": body.get("priority", 1),
        "ab_share": ab.get("share", 0),
        "ab_kind": kind,
        "ab_template": ab_template,
        "ab_subject": ab.get("subject", ""),
        "ab_wait": dt.timedelta(minutes=ab.get("wait_minutes", 240)),
        "ab_metric": ab.get("winner_by", Broadcast.AbMetric.CLICKS),
        "ab_conversion_event": ab.get("conversion_event", "order.completed"),
    }


def _invalid(exc: BroadcastInvalid) -> ApiError:
    return ApiError(code="invalid", message=str(exc), fields=exc.fields)


def _conflict(exc: BroadcastInvalid) -> ApiError:
    return ApiError(code="conflict", message=str(exc), fields=exc.fields, status_code=409)


def _save(body: dict[str, Any], key: str) -> tuple[Broadcast, bool]:
    fields = _fields(body)
    try:
        return broadcast_save(key=key, fields=fields)
    except BroadcastInvalid as exc:
        if "status" in exc.fields:
            raise _conflict(exc) from None
        raise _invalid(exc) from None


def _broadcast(key: str) -> Broadcast:
    broadcast = (
        Broadcast.objects.select_related("template", "topic", "ab_template").filter(key=key).first()
    )
    if broadcast is None:
        raise NotFound(f"No broadcast {key!r}.")
    return broadcast


def _out(b: Broadcast) -> dict[str, Any]:
    return {
        "key": b.key,
        "name": b.name,
        "template": b.template.key,
        "topic": b.topic.key,
        "audience": {"segment": b.segment} if b.audience == "segment" else {"topic": b.topic.key},
        "channel": b.channel,
        "data": b.data or {},
        "send_at": b.send_at if b.schedule == Broadcast.Schedule.AT else None,
        "local_time": (
            {"date": b.local_date, "time": b.local_time.strftime("%H:%M")}
            if b.schedule == Broadcast.Schedule.LOCAL_TIME
            else None
        ),
        "rate_per_minute": b.rate_per_minute,
        "expires_at": b.expires_at,
        "priority": b.priority,
        "ab_test": (
            {
                "share": b.ab_share,
                "kind": b.ab_kind,
                "template": b.ab_template.key if b.ab_template_id else None,
                "subject": b.ab_subject,
                "wait_minutes": int(b.ab_wait.total_seconds() // 60),
                "winner_by": b.ab_metric,
                "conversion_event": b.ab_conversion_event,
                "winner": b.ab_winner or None,
            }
            if b.has_test
            else None
        ),
        "status": b.status,
        "due_at": b.due_at,
        "progress": broadcast_progress(b).as_dict(),
        "results": broadcast_results(b).as_dict(),
    }


# --- views -----------------------------------------------------------------------------

_KEY = _key_parameter("key", "The broadcast key.")
_TAGS = ["broadcasts"]


class BroadcastListView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="broadcasts_list",
        tags=_TAGS,
        responses={200: BroadcastListSerializer, **_errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                "results": [
                    {"key": b.key, "name": b.name, "status": b.status, "due_at": b.due_at}
                    for b in Broadcast.objects.all()
                ]
            }
        )

    @extend_schema(
        operation_id="broadcasts_create",
        tags=_TAGS,
        summary="Create a broadcast (a draft)",
        request=BroadcastInSerializer,
        responses={201: BroadcastSerializer, **_errors(400, 401, 403, 409, 413)},
    )
    def post(self, request: Request) -> Response:
        body = _valid(BroadcastInSerializer, request.data)
        if Broadcast.objects.filter(key=body["key"]).exists():
            raise ApiError(
                code="already_exists",
                message=f"A broadcast {body['key']!r} exists; PUT replaces it.",
                status_code=409,
            )
        broadcast, _created = _save(body, body["key"])
        return Response(_out(_broadcast(broadcast.key)), status=status.HTTP_201_CREATED)


class BroadcastDetailView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="broadcasts_retrieve",
        tags=_TAGS,
        summary="A broadcast with its progress and results",
        parameters=[_KEY],
        responses={200: BroadcastSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, key: str) -> Response:
        return Response(_out(_broadcast(key)))

    @extend_schema(
        operation_id="broadcasts_put",
        tags=_TAGS,
        summary="Replace a draft or a scheduled broadcast not yet started (created if new)",
        parameters=[_KEY],
        request=BroadcastPutSerializer,
        responses={
            200: BroadcastSerializer,
            201: BroadcastSerializer,
            **_errors(400, 401, 403, 409, 413),
        },
    )
    def put(self, request: Request, key: str) -> Response:
        body = _valid(BroadcastInSerializer, _body_with_key(request.data, key))
        broadcast, created = _save(body, key)
        return Response(
            _out(_broadcast(broadcast.key)),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="broadcasts_delete",
        tags=_TAGS,
        summary="Delete a broadcast that never started; one that did is canceled instead",
        parameters=[_KEY],
        responses={204: None, 200: CancelSerializer, **_errors(401, 403, 404)},
    )
    def delete(self, request: Request, key: str) -> Response:
        broadcast = _broadcast(key)
        if broadcast.materialised_at is None:
            broadcast_delete(broadcast=broadcast)
            return Response(status=status.HTTP_204_NO_CONTENT)
        canceled = broadcast_cancel(broadcast=broadcast)
        broadcast.refresh_from_db()
        return Response({"key": key, "status": broadcast.status, "canceled": canceled})


class BroadcastScheduleView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="broadcasts_schedule",
        tags=_TAGS,
        summary="Schedule a draft: materialised when due (now, at send_at, or when the "
        "local time first comes anywhere)",
        parameters=[_KEY],
        request=None,
        responses={200: BroadcastSerializer, **_errors(400, 401, 403, 404, 409)},
    )
    def post(self, request: Request, key: str) -> Response:
        broadcast = _broadcast(key)
        try:
            broadcast_schedule(broadcast=broadcast)
        except BroadcastInvalid as exc:
            if "status" in exc.fields:
                raise _conflict(exc) from None
            raise _invalid(exc) from None
        return Response(_out(_broadcast(key)))


class BroadcastCancelView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="broadcasts_cancel",
        tags=_TAGS,
        summary="Cancel: nothing more is materialised; copies still waiting are canceled",
        parameters=[_KEY],
        request=None,
        responses={200: CancelSerializer, **_errors(401, 403, 404)},
    )
    def post(self, request: Request, key: str) -> Response:
        broadcast = _broadcast(key)
        canceled = broadcast_cancel(broadcast=broadcast)
        broadcast.refresh_from_db()
        return Response({"key": key, "status": broadcast.status, "canceled": canceled})


class BroadcastTestView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="broadcasts_test",
        tags=_TAGS,
        summary="Send each variant to the named customers now (counted in no result)",
        parameters=[_KEY],
        request=TestInSerializer,
        responses={202: TestOutSerializer, **_errors(400, 401, 403, 404, 413)},
    )
    def post(self, request: Request, key: str) -> Response:
        broadcast = _broadcast(key)
        ids = _valid(TestInSerializer, request.data)["customers"]
        customers = {c.external_id: c for c in Customer.objects.filter(external_id__in=ids)}
        unknown = [i for i in ids if i not in customers]
        if unknown:
            raise ApiError(
                code="invalid",
                message="Unknown customers.",
                fields={"customers": [f"No customer {i!r}." for i in unknown[:20]]},
            )
        try:
            messages = broadcast_test_send(
                broadcast=broadcast, customers=[customers[i] for i in dict.fromkeys(ids)]
            )
        except SendRefused as exc:
            raise ApiError(
                code=exc.code, message=str(exc), fields={exc.field: [str(exc)]}
            ) from None
        return Response(
            {
                "messages": [
                    {
                        "id": m.id,
                        "customer": m.customer.external_id,
                        "channel": m.channel,
                        "status": m.status,
                    }
                    for m in messages
                ]
            },
            status=status.HTTP_202_ACCEPTED,
        )


class BroadcastForecastView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="broadcasts_forecast",
        tags=_TAGS,
        summary="Forecast on current data: messages per channel, holds by reason. Sends "
        "and writes nothing.",
        parameters=[_KEY],
        request=ForecastInSerializer,
        responses={200: ForecastSerializer, **_errors(400, 401, 403, 404, 413)},
    )
    def post(self, request: Request, key: str) -> Response:
        broadcast = _broadcast(key)
        options = _valid(ForecastInSerializer, request.data or {})
        try:
            return Response(broadcast_forecast(broadcast, sample=options["sample"]))
        except AudienceMissing as exc:
            raise ApiError(
                code="invalid", message=str(exc), fields={"audience.segment": [str(exc)]}
            ) from None
