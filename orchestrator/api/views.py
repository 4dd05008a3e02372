"""The /api/v1/ endpoints: check the request's shape, call one service, shape the answer.

Authentication (Bearer API key) and scopes (``required_scopes``) come from the
project-wide DRF settings; every error is the JSON body of ``orchestrator.api.errors``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestrator.api import services
from orchestrator.api.batch import (
    MessageBatchInSerializer,
    MessageBatchOutSerializer,
    messages_batch,
)
from orchestrator.api.errors import ApiError
from orchestrator.api.idempotency import IDEMPOTENCY_PARAMETER, idempotent
from orchestrator.api.parsers import SafeJSONParser
from orchestrator.api.plain import checker, validated
from orchestrator.api.schema import ApiAutoSchema
from orchestrator.api.serializers import (
    CustomerBulkInSerializer,
    CustomerBulkOutSerializer,
    CustomerInSerializer,
    CustomerSerializer,
    ErrorSerializer,
    EventBulkInSerializer,
    EventInSerializer,
    EventsAcceptedSerializer,
    FrequencyRuleSerializer,
    MessageAcceptedSerializer,
    MessageInSerializer,
    MessageSerializer,
    TemplateSerializer,
    TopicSerializer,
    rule_definition,
)
from orchestrator.audience.models import Customer
from orchestrator.audience.services import customer_upsert
from orchestrator.consent.models import Topic
from orchestrator.consent.services import (
    TopicExists,
    TopicInUse,
    topic_create,
    topic_delete,
    topic_put,
)
from orchestrator.delivery.models import FrequencyRule, Message, MessageTemplate
from orchestrator.delivery.rule_services import (
    RuleExists,
    frequency_rule_create,
    frequency_rule_delete,
    frequency_rule_put,
)
from orchestrator.delivery.template_services import (
    TemplateExists,
    TemplateInUse,
    template_create,
    template_delete,
    template_put,
)

_ERROR_TEXT = {
    400: "Invalid request: malformed JSON, wrong types or unknown references.",
    401: "Missing or invalid API key.",
    403: "The API key lacks the scope.",
    404: "Not found.",
    409: "Conflict.",
    413: "The body exceeds the size limit.",
    422: "Idempotency-Key reused with another request.",
}


def _errors(*codes: int, **described: str) -> dict[int, OpenApiResponse]:
    """Error responses; ``e422="..."`` describes a code in this operation's words."""
    return {
        code: OpenApiResponse(
            ErrorSerializer, description=described.get(f"e{code}", _ERROR_TEXT[code])
        )
        for code in codes
    }


#: What the ``slug`` path converter matches; anything else is a 404 before the view.
SLUG_PATTERN = r"^[-a-zA-Z0-9_]+$"


def _key_parameter(name: str, description: str, *, slug: bool = True) -> OpenApiParameter:
    schema = {"type": "string", "pattern": SLUG_PATTERN} if slug else OpenApiTypes.STR
    return OpenApiParameter(
        name, schema, OpenApiParameter.PATH, required=True, description=description
    )


def _put_body(serializer_class: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """For the schema of a PUT: the same body, whose ``key`` may be left out (it is in
    the URL; ``_body_with_key`` refuses one that differs)."""
    name = serializer_class.__name__.removesuffix("Serializer")
    key = serializer_class().fields["key"]
    optional = type(key)(required=False, max_length=key.max_length)
    return type(f"{name}PutSerializer", (serializer_class,), {"key": optional})


class JsonNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, answering at once the common case - no format override and an
    Accept header that is absent, ``*/*`` or the first renderer's own media type - with
    what the full negotiation would choose for it: that renderer and its media type."""

    def select_renderer(self, request, renderers, format_suffix=None):
        accept = request.META.get("HTTP_ACCEPT", "*/*")
        first = renderers[0] if renderers else None
        if (
            first is not None
            and not format_suffix
            and accept in ("*/*", first.media_type)
            and self.settings.URL_FORMAT_OVERRIDE not in request.query_params
        ):
            return first, first.media_type
        return super().select_renderer(request, renderers, format_suffix)


# Every endpoint parses JSON with the hardened parser, and documents the statuses the
# plumbing adds (orchestrator.api.schema). A comment, not a docstring: drf-spectacular
# would show a docstring as every operation's description.
class ApiView(APIView):
    parser_classes = [SafeJSONParser]
    content_negotiation_class = JsonNegotiation
    schema = ApiAutoSchema()


def _valid(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _checked(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """``_valid`` for the single-item endpoints a client calls per event or send: the
    data is checked by one serializer kept per class, with the plain checks first, as
    the bulk endpoints check their items (``orchestrator.api.plain``). Only for
    serializers that keep no state of their own while validating (no context, no
    instance). A refused body goes through ``_valid`` again, so the error body is
    exactly the one a fresh serializer gives."""
    try:
        return dict(validated(checker(serializer_class), data))
    except serializers.ValidationError:
        return _valid(serializer_class, data)


def _body_with_key(data: Any, key: str) -> Any:
    """A PUT body may leave out the key (it is in the URL) but must not contradict it."""
    if not isinstance(data, dict):
        return data
    if "key" in data and data["key"] != key:
        raise ApiError(
            code="key_mismatch",
            message="The key in the body differs from the key in the URL.",
            fields={"key": [f"Must be {key!r}, as in the URL."]},
        )
    return {**data, "key": key}


# --- Customers ---------------------------------------------------------------------


class CustomerUpsertView(ApiView):
    required_scopes = ["track"]

    @extend_schema(
        operation_id="customers_upsert",
        tags=["customers"],
        summary="Create or update a customer by external_id",
        request=CustomerInSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: CustomerSerializer,
            200: CustomerSerializer,
            **_errors(400, 401, 403, 409, 413, 422),
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        customer, created = customer_upsert(**_checked(CustomerInSerializer, request.data))
        return Response(
            CustomerSerializer(customer).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class CustomerBulkView(ApiView):
    required_scopes = ["track"]

    @extend_schema(
        operation_id="customers_bulk_upsert",
        tags=["customers"],
        summary="Upsert up to 1000 customers; each item succeeds or fails on its own",
        request=CustomerBulkInSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={200: CustomerBulkOutSerializer, **_errors(400, 401, 403, 409, 413, 422)},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        items = _valid(CustomerBulkInSerializer, request.data)["customers"]
        return Response(services.customers_bulk_upsert(items))


class CustomerDetailView(ApiView):
    required_scopes = ["read"]

    @extend_schema(
        operation_id="customers_retrieve",
        tags=["customers"],
        parameters=[_key_parameter("external_id", "The customer's external_id.", slug=False)],
        responses={200: CustomerSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, external_id: str) -> Response:
        customer = Customer.objects.filter(external_id=external_id).first()
        if customer is None:
            raise NotFound(f"No customer with external_id {external_id!r}.")
        return Response(CustomerSerializer(customer).data)


# --- Events ------------------------------------------------------------------------


class EventView(ApiView):
    required_scopes = ["track"]

    @extend_schema(
        operation_id="events_record",
        tags=["events"],
        summary="Record one event (an unknown customer is created)",
        request=EventInSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={202: EventsAcceptedSerializer, **_errors(400, 401, 403, 409, 413, 422)},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        recorded = services.events_record([_checked(EventInSerializer, request.data)])
        return Response(
            {"accepted": recorded.accepted, "duplicates": recorded.duplicates},
            status=status.HTTP_202_ACCEPTED,
        )


class EventBulkView(ApiView):
    required_scopes = ["track"]

    @extend_schema(
        operation_id="events_bulk_record",
        tags=["events"],
        summary="Record up to 1000 events at once; any invalid item refuses the batch",
        request=EventBulkInSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={202: EventsAcceptedSerializer, **_errors(400, 401, 403, 409, 413, 422)},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        events = _valid(EventBulkInSerializer, request.data)["events"]
        recorded = services.events_record(events)
        return Response(
            {"accepted": recorded.accepted, "duplicates": recorded.duplicates},
            status=status.HTTP_202_ACCEPTED,
        )


# --- Messages ------------------------------------------------------------------------


class MessageCreateView(ApiView):
    required_scopes = ["send"]

    @extend_schema(
        operation_id="messages_send",
        tags=["messages"],
        summary="Queue a transactional or API-triggered message",
        request=MessageInSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            202: MessageAcceptedSerializer,
            **_errors(
                400,
                401,
                403,
                409,
                413,
                422,
                e422="The template cannot render with the data given (the missing variables "
                "are named in fields), or Idempotency-Key reused with another request.",
            ),
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        message = services.message_send(**_checked(MessageInSerializer, request.data))
        return Response(MessageAcceptedSerializer.of(message), status=status.HTTP_202_ACCEPTED)


class MessageBatchView(ApiView):
    required_scopes = ["send"]

    @extend_schema(
        operation_id="messages_send_batch",
        tags=["messages"],
        summary="Queue up to 1000 messages, each with its own idempotency_key and result",
        description="Each item is a send as POST /api/v1/messages takes it plus its own "
        "idempotency_key (shared with that endpoint: a key sent there before is a replay "
        "here). Answered 207 with one result per item, in order: 202 and the message id, "
        "or the 4xx and error the single endpoint would have answered. The batch is "
        "written in one transaction.",
        request=MessageBatchInSerializer,
        responses={
            207: MessageBatchOutSerializer,
            **_errors(400, 401, 403, 409, 413, e409="A claimed key changed hands meanwhile."),
        },
    )
    def post(self, request: Request) -> Response:
        items = _valid(MessageBatchInSerializer, request.data)["messages"]
        return Response(
            messages_batch(api_key=request.auth, items=items), status=status.HTTP_207_MULTI_STATUS
        )


class MessageDetailView(ApiView):
    required_scopes = ["read"]

    @extend_schema(
        operation_id="messages_retrieve",
        tags=["messages"],
        parameters=[OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, required=True)],
        responses={200: MessageSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        message = (
            Message.objects.select_related("customer", "topic", "template")
            .prefetch_related("history")
            .filter(pk=pk)
            .first()
        )
        if message is None:
            raise NotFound(f"No message {pk}.")
        return Response(MessageSerializer(message).data)


# --- Configuration: topics -------------------------------------------------------------


class TopicListSerializer(serializers.Serializer):
    results = TopicSerializer(many=True)


def _topic_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("created_at", "updated_at")}


class TopicListView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="topics_list",
        tags=["configuration"],
        responses={200: TopicListSerializer, **_errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        return Response({"results": TopicSerializer(Topic.objects.all(), many=True).data})

    @extend_schema(
        operation_id="topics_create",
        tags=["configuration"],
        request=TopicSerializer,
        responses={201: TopicSerializer, **_errors(400, 401, 403, 409, 413)},
    )
    def post(self, request: Request) -> Response:
        try:
            topic = topic_create(**_topic_fields(_valid(TopicSerializer, request.data)))
        except TopicExists as exc:
            raise ApiError(code="already_exists", message=str(exc), status_code=409) from None
        return Response(TopicSerializer(topic).data, status=status.HTTP_201_CREATED)


class TopicDetailView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="topics_retrieve",
        tags=["configuration"],
        parameters=[_key_parameter("key", "The topic key.")],
        responses={200: TopicSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, key: str) -> Response:
        topic = Topic.objects.filter(key=key).first()
        if topic is None:
            raise NotFound(f"No topic {key!r}.")
        return Response(TopicSerializer(topic).data)

    @extend_schema(
        operation_id="topics_put",
        tags=["configuration"],
        summary="Replace a topic (created if new)",
        parameters=[_key_parameter("key", "The topic key.")],
        request=_put_body(TopicSerializer),
        responses={
            200: TopicSerializer,
            201: TopicSerializer,
            **_errors(400, 401, 403, 413),
        },
    )
    def put(self, request: Request, key: str) -> Response:
        fields = _topic_fields(_valid(TopicSerializer, _body_with_key(request.data, key)))
        topic, created = topic_put(**fields)
        return Response(
            TopicSerializer(topic).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="topics_delete",
        tags=["configuration"],
        summary="Delete a topic nothing refers to",
        parameters=[_key_parameter("key", "The topic key.")],
        responses={204: None, **_errors(401, 403, 404, 409)},
    )
    def delete(self, request: Request, key: str) -> Response:
        try:
            topic_delete(key=key)
        except Topic.DoesNotExist:
            raise NotFound(f"No topic {key!r}.") from None
        except TopicInUse as exc:
            raise ApiError(code="in_use", message=str(exc), status_code=409) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Configuration: templates ----------------------------------------------------------


class TemplateListSerializer(serializers.Serializer):
    results = TemplateSerializer(many=True)


def _template_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": data["key"],
        "name": data["name"],
        "topic": data.get("topic"),
        "description": data.get("description", ""),
        "track_clicks": data.get("track_clicks", True),
        "variants": data["variants"],
    }


class TemplateListView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="templates_list",
        tags=["configuration"],
        responses={200: TemplateListSerializer, **_errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        templates = MessageTemplate.objects.select_related("topic").prefetch_related("variants")
        return Response({"results": [TemplateSerializer.of(t) for t in templates]})

    @extend_schema(
        operation_id="templates_create",
        tags=["configuration"],
        summary="Create a template; a Liquid syntax error names the field and line",
        request=TemplateSerializer,
        responses={201: TemplateSerializer, **_errors(400, 401, 403, 409, 413)},
    )
    def post(self, request: Request) -> Response:
        try:
            template = template_create(**_template_fields(_valid(TemplateSerializer, request.data)))
        except TemplateExists as exc:
            raise ApiError(code="already_exists", message=str(exc), status_code=409) from None
        return Response(TemplateSerializer.of(template), status=status.HTTP_201_CREATED)


class TemplateDetailView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="templates_retrieve",
        tags=["configuration"],
        parameters=[_key_parameter("key", "The template key.")],
        responses={200: TemplateSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, key: str) -> Response:
        template = MessageTemplate.objects.select_related("topic").filter(key=key).first()
        if template is None:
            raise NotFound(f"No template {key!r}.")
        return Response(TemplateSerializer.of(template))

    @extend_schema(
        operation_id="templates_put",
        tags=["configuration"],
        summary="Replace a template and all its variants (created if new)",
        parameters=[_key_parameter("key", "The template key.")],
        request=_put_body(TemplateSerializer),
        responses={
            200: TemplateSerializer,
            201: TemplateSerializer,
            **_errors(400, 401, 403, 413),
        },
    )
    def put(self, request: Request, key: str) -> Response:
        data = _valid(TemplateSerializer, _body_with_key(request.data, key))
        template, created = template_put(**_template_fields(data))
        return Response(
            TemplateSerializer.of(template),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="templates_delete",
        tags=["configuration"],
        summary="Delete a template no message refers to",
        parameters=[_key_parameter("key", "The template key.")],
        responses={204: None, **_errors(401, 403, 404, 409)},
    )
    def delete(self, request: Request, key: str) -> Response:
        try:
            template_delete(key=key)
        except MessageTemplate.DoesNotExist:
            raise NotFound(f"No template {key!r}.") from None
        except TemplateInUse as exc:
            raise ApiError(code="in_use", message=str(exc), status_code=409) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Configuration: frequency rules ----------------------------------------------------


class FrequencyRuleListSerializer(serializers.Serializer):
    results = FrequencyRuleSerializer(many=True)


class FrequencyRuleListView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="frequency_rules_list",
        tags=["configuration"],
        responses={200: FrequencyRuleListSerializer, **_errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        rules = FrequencyRule.objects.select_related("topic")
        return Response({"results": FrequencyRuleSerializer(rules, many=True).data})

    @extend_schema(
        operation_id="frequency_rules_create",
        tags=["configuration"],
        request=FrequencyRuleSerializer,
        responses={201: FrequencyRuleSerializer, **_errors(400, 401, 403, 409, 413)},
    )
    def post(self, request: Request) -> Response:
        definition = rule_definition(_valid(FrequencyRuleSerializer, request.data))
        try:
            rule = frequency_rule_create(**definition)
        except RuleExists as exc:
            raise ApiError(code="already_exists", message=str(exc), status_code=409) from None
        return Response(FrequencyRuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class FrequencyRuleDetailView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="frequency_rules_retrieve",
        tags=["configuration"],
        parameters=[_key_parameter("key", "The rule key.")],
        responses={200: FrequencyRuleSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, key: str) -> Response:
        rule = FrequencyRule.objects.select_related("topic").filter(key=key).first()
        if rule is None:
            raise NotFound(f"No frequency rule {key!r}.")
        return Response(FrequencyRuleSerializer(rule).data)

    @extend_schema(
        operation_id="frequency_rules_put",
        tags=["configuration"],
        summary="Replace a frequency rule (created if new)",
        parameters=[_key_parameter("key", "The rule key.")],
        request=_put_body(FrequencyRuleSerializer),
        responses={
            200: FrequencyRuleSerializer,
            201: FrequencyRuleSerializer,
            **_errors(400, 401, 403, 413),
        },
    )
    def put(self, request: Request, key: str) -> Response:
        data = _valid(FrequencyRuleSerializer, _body_with_key(request.data, key))
        rule, created = frequency_rule_put(**rule_definition(data))
        return Response(
            FrequencyRuleSerializer(rule).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="frequency_rules_delete",
        tags=["configuration"],
        parameters=[_key_parameter("key", "The rule key.")],
        responses={204: None, **_errors(401, 403, 404)},
    )
    def delete(self, request: Request, key: str) -> Response:
        try:
            frequency_rule_delete(key=key)
        except FrequencyRule.DoesNotExist:
            raise NotFound(f"No frequency rule {key!r}.") from None
        return Response(status=status.HTTP_204_NO_CONTENT)
