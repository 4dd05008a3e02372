"""Request and response shapes of /api/v1/: type checks here, meaning in the services.

Fields are strict about JSON types (a number is not a string, "5" is not a priority)
so a client's mistake comes back as a field error instead of being coerced.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from journeys.selectors import series_names
from orchestrator.audience.models import Customer
from orchestrator.audience.validators import (
    DATETIME_MESSAGES,
    normalize_phone,
    parse_aware_datetime,
)
from orchestrator.consent.models import CHANNELS, Channel, Topic
from orchestrator.delivery.models import FrequencyRule, Message, MessageTemplate
from orchestrator.delivery.selectors import customer_explanation


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSlugField(serializers.SlugField):
    default_error_messages = {"invalid": "Must be a slug: letters, digits, hyphens, underscores."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"invalid": "Must be an integer."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=str(data)[:50])
        return super().to_internal_value(data)


#: The enum component drf-spectacular makes of Channel.choices (named after the fields
#: called "channel"); referring to it keeps one name for one choice set in the schema.
_CHANNEL_ENUM = {"$ref": "#/components/schemas/ChannelEnum"}


class ChannelField(StrictChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=Channel.choices, **kwargs)


@extend_schema_field(_CHANNEL_ENUM)
class ChannelListItemField(ChannelField):
    """A channel inside a list (Topic.channels)."""


@extend_schema_field({"anyOf": [_CHANNEL_ENUM, {"type": "string", "enum": ["preferred"]}]})
class RequestedChannelField(StrictChoiceField):
    """A channel, or "preferred": the customer's order, then the default order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=[*CHANNELS, "preferred"], **kwargs)


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with an explicit offset the database can store (``parse_aware_datetime``);
    a naive time would be guessed, so it is refused."""

    default_error_messages = DATETIME_MESSAGES

    def to_internal_value(self, value: Any) -> dt.datetime:
        try:
            return parse_aware_datetime(value)
        except DjangoValidationError as exc:
            self.fail(exc.code or "invalid")


class BoundedListField(serializers.ListField):
    """A list whose length is checked before its items are validated one by one."""

    def to_internal_value(self, data: Any) -> list[Any]:
        if isinstance(data, list) and self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class JsonObjectField(serializers.DictField):
    """Any JSON object (values unchecked)."""

    default_error_messages = {"not_a_dict": "Must be a JSON object."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(child=serializers.JSONField(allow_null=True), **kwargs)


def _bulk_limit() -> int:
    return settings.API_BULK_LIMIT


# --- Errors ------------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


# --- Customers ---------------------------------------------------------------------


class CustomerInSerializer(serializers.Serializer):
    """Fields left out are left unchanged; ``null`` clears one, or removes an attribute."""

    external_id = StrictCharField(max_length=255)
    email = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=254)
    phone = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=40)
    whatsapp = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=40)
    line_user_id = StrictCharField(required=False, allow_blank=True, allow_null=True, max_length=64)
    locale = StrictCharField(required=False, max_length=16)
    timezone = StrictCharField(required=False, max_length=64)
    attributes = JsonObjectField(required=False)


@extend_schema_field(
    {"oneOf": [{"type": "string", "format": "email"}, {"type": "string", "maxLength": 0}]}
)
class OptionalEmailField(serializers.CharField):
    """An email address, or "" when the customer has none."""


class CustomerSerializer(serializers.ModelSerializer):
    email = OptionalEmailField(read_only=True)

    class Meta:
        model = Customer
        fields = [
            "external_id",
            "email",
            "phone",
            "whatsapp",
            "line_user_id",
            "locale",
            "timezone",
            "attributes",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class CustomerBulkInSerializer(serializers.Serializer):
    customers = BoundedListField(
        child=serializers.JSONField(), max_length=_bulk_limit(), allow_empty=False
    )


class CustomerBulkItemSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    external_id = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=["created", "updated", "invalid"])
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class CustomerBulkOutSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    invalid = serializers.IntegerField()
    results = CustomerBulkItemSerializer(many=True)


# --- Events ------------------------------------------------------------------------


class EventInSerializer(serializers.Serializer):
    customer = StrictCharField(max_length=255, help_text="The customer's external_id.")
    name = StrictCharField(max_length=200)
    properties = JsonObjectField(required=False, default=dict)
    occurred_at = AwareDateTimeField(required=False, help_text="Defaults to now.")
    event_id = StrictCharField(
        required=False, allow_null=True, max_length=255, help_text="Client id; dedupes."
    )


class EventBulkInSerializer(serializers.Serializer):
    events = BoundedListField(
        child=EventInSerializer(), max_length=_bulk_limit(), allow_empty=False
    )


class EventsAcceptedSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()


# --- Messages ------------------------------------------------------------------------


class RecipientSerializer(serializers.Serializer):
    """Exactly one of external_id, email or phone (E.164 after normalization)."""

    external_id = StrictCharField(required=False, max_length=255)
    email = StrictCharField(required=False, max_length=254)
    phone = StrictCharField(required=False, max_length=40)

    def validate_email(self, value: str) -> str:
        if any(c in value for c in "\r\n"):
            raise serializers.ValidationError("Must not contain line breaks.")
        try:
            validate_email(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        return value

    def validate_phone(self, value: str) -> str:
        try:
            return normalize_phone(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if len(attrs) != 1:
            raise serializers.ValidationError("Give exactly one of external_id, email or phone.")
        return attrs


@extend_schema_field(RecipientSerializer)
class RecipientField(serializers.Field):
    """The recipient, with errors about it as a whole named ``to`` (not ``to.non_field_errors``)."""

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                "Must be an object with one of external_id, email or phone."
            )
        try:
            return dict(self._checker.run_validation(data))
        except serializers.ValidationError as exc:
            errors = dict(exc.detail)
        whole = errors.pop("non_field_errors", None)
        raise serializers.ValidationError(errors or whole)

    @functools.cached_property
    def _checker(self) -> RecipientSerializer:
        # One per field, not one per value: building a serializer copies its fields,
        # which a batch of a thousand sends would pay a thousand times.
        return RecipientSerializer()

    def to_representation(self, value: dict[str, str]) -> dict[str, str]:
        return value


class MessageInSerializer(serializers.Serializer):
    to = RecipientField()
    template = StrictCharField(max_length=100, help_text="Template key.")
    topic = StrictCharField(
        required=False, allow_null=True, max_length=100, help_text="Defaults to the template's."
    )
    channel = RequestedChannelField(default="preferred")
    data = JsonObjectField(required=False, default=dict)
    send_at = AwareDateTimeField(required=False, allow_null=True)
    expires_at = AwareDateTimeField(required=False, allow_null=True)
    priority = StrictIntegerField(min_value=0, max_value=9, default=5)
    fallback_channel = ChannelField(
        required=False, help_text="Tried once if the first channel fails permanently."
    )


class FrequencyRuleSerializer(serializers.Serializer):
    """A frequency rule; on PUT the whole definition (left-out fields take their defaults)."""

    key = StrictSlugField(max_length=100)
    name = StrictCharField(max_length=200)
    description = StrictCharField(required=False, allow_blank=True, default="")
    active = StrictBooleanField(default=True)
    kind = StrictChoiceField(choices=FrequencyRule.Kind.choices, default="cap")
    scope = StrictChoiceField(choices=FrequencyRule.Scope.choices, default="global")
    channel = StrictCharField(required=False, allow_blank=True, default="", max_length=16)
    topic = StrictCharField(
        required=False, allow_null=True, default=None, max_length=100, help_text="Topic key."
    )
    journey = StrictCharField(required=False, allow_blank=True, default="", max_length=100)
    limit = StrictIntegerField(min_value=1, max_value=10_000, default=1)
    window_seconds = StrictIntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=60,
        max_value=31 * 86400,
        help_text="Rolling window or minimum gap, in seconds; null for a calendar window.",
    )
    calendar = StrictCharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=8,
        help_text="day, week or month, in each customer's own time zone.",
    )
    applies_to = StrictChoiceField(choices=FrequencyRule.AppliesTo.choices, default="marketing")
    action = StrictChoiceField(choices=FrequencyRule.Action.choices, default="defer")
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, instance: FrequencyRule) -> dict[str, Any]:
        return {
            "key": instance.key,
            "name": instance.name,
            "description": instance.description,
            "active": instance.active,
            "kind": instance.kind,
            "scope": instance.scope,
            "channel": instance.channel,
            "topic": instance.topic.key if instance.topic_id else None,
            "journey": instance.journey,
            "limit": instance.limit,
            "window_seconds": int(instance.window.total_seconds()) if instance.window else None,
            "calendar": instance.calendar,
            "applies_to": instance.applies_to,
            "action": instance.action,
            "created_at": instance.created_at.isoformat(),
            "updated_at": instance.updated_at.isoformat(),
        }


def rule_definition(data: dict[str, Any]) -> dict[str, Any]:
    """Validated serializer data as keyword arguments of the rule services."""
    fields = {k: v for k, v in data.items() if k not in ("created_at", "updated_at")}
    seconds = fields.pop("window_seconds", None)
    fields["window"] = dt.timedelta(seconds=seconds) if seconds else None
    return fields


class MessageAcceptedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    channel = serializers.CharField()
    explanation = serializers.ListField(child=serializers.JSONField())

    @staticmethod
    def of(message: Message) -> dict[str, Any]:
        return {
            "id": message.pk,
            "status": message.status,
            "channel": message.channel,
            "explanation": message.explanation,
        }


def mask_address(address: str) -> str:
    """Enough to recognise an address in a support ticket, not enough to harvest it."""
    if not address:
        return ""
    if "@" in address:
        local, _, domain = address.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if len(address) <= 6:
        return "***"
    return f"{address[:3]}***{address[-4:]}"


class MessageEventSerializer(serializers.Serializer):
    status = serializers.CharField()
    occurred_at = serializers.DateTimeField()
    reason = serializers.CharField()
    code = serializers.CharField()


class MessageSerializer(serializers.ModelSerializer):
    customer = serializers.CharField(source="customer.external_id")
    topic = serializers.CharField(source="topic.key")
    template = serializers.CharField(source="template.key")
    to = serializers.SerializerMethodField()
    history = MessageEventSerializer(many=True)
    explanation_text = serializers.SerializerMethodField(
        help_text="The decision trail in plain sentences, as the customer would be told."
    )

    class Meta:
        model = Message
        fields = [
            "id",
            "status",
            "channel",
            "requested_channel",
            "customer",
            "to",
            "topic",
            "template",
            "locale",
            "priority",
            "source",
            "journey",
            "fallback_channel",
            "provider",
            "provider_message_id",
            "send_after",
            "expires_at",
            "created_at",
            "decided_at",
            "sent_at",
            "attempts",
            "last_error",
            "history",
            "explanation",
            "explanation_text",
        ]
        read_only_fields = fields

    def get_to(self, message: Message) -> str:
        return mask_address(message.to_address)

    def get_explanation_text(self, message: Message) -> list[str]:
        series = series_names([message.journey]).get(message.journey)
        return customer_explanation(message, journey_name=series)


# --- Configuration: topics and templates ----------------------------------------------


class TopicSerializer(serializers.Serializer):
    """A topic; on PUT the whole definition (left-out fields take their defaults)."""

    key = StrictSlugField(max_length=100)
    name = StrictCharField(max_length=200)
    names = serializers.DictField(
        child=StrictCharField(max_length=200),
        required=False,
        default=dict,
        help_text='The name customers read, per language: {"ja": "セール情報"}.',
    )
    description = StrictCharField(required=False, allow_blank=True, default="")
    kind = StrictChoiceField(choices=Topic.Kind.choices, default=Topic.Kind.MARKETING)
    default_opt_in = StrictBooleanField(default=False)
    quiet_hours = StrictChoiceField(
        choices=Topic.QuietHours.choices, default=Topic.QuietHours.DEFAULT
    )
    digestible = StrictBooleanField(
        default=False,
        help_text="Customers may choose a daily or weekly digest of this topic.",
    )
    digest_template = StrictCharField(
        max_length=100,
        required=False,
        allow_blank=True,
        default="",
        help_text="Key of the template its digests are written with (a variant on each of "
        "the topic's channels); empty: the template '<key>-digest' if any, else a built-in "
        "layout.",
    )
    channels = serializers.ListField(
        child=ChannelListItemField(),
        allow_empty=False,
        default=lambda: list(CHANNELS),
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class VariantSerializer(serializers.Serializer):
    channel = ChannelField()
    locale = StrictCharField(max_length=16, default="en")
    subject = StrictCharField(
        max_length=500, required=False, allow_blank=True, default="", trim_whitespace=False
    )
    body = StrictCharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    html = StrictCharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    provider_options = JsonObjectField(
        required=False,
        help_text="WhatsApp content_sid and content_variables, or a LINE kind; "
        "left out, the variant keeps its options.",
    )


class TemplateSerializer(serializers.Serializer):
    """A template with all its variants; on PUT the variants given replace all others."""

    key = StrictSlugField(max_length=100)
    name = StrictCharField(max_length=200)
    topic = StrictCharField(
        required=False, allow_null=True, default=None, max_length=100, help_text="Topic key."
    )
    description = StrictCharField(required=False, allow_blank=True, default="")
    track_clicks = StrictBooleanField(
        required=False,
        default=True,
        help_text="Send links through /r/ to record clicks; false sends them as written.",
    )
    variants = BoundedListField(child=VariantSerializer(), allow_empty=False, max_length=200)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    @staticmethod
    def of(template: MessageTemplate) -> dict[str, Any]:
        variants = [
            {
                "channel": v.channel,
                "locale": v.locale,
                "subject": v.subject,
                "body": v.body,
                "html": v.html,
                "provider_options": v.provider_options,
            }
            for v in template.variants.all()
        ]
        return TemplateSerializer(
            {
                "key": template.key,
                "name": template.name,
                "topic": template.topic.key if template.topic else None,
                "description": template.description,
                "track_clicks": template.track_clicks,
                "variants": variants,
                "created_at": template.created_at,
                "updated_at": template.updated_at,
            }
        ).data
