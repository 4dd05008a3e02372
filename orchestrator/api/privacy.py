"""/api/v1/customers/{external_id}/export, /erase and /preferences: a person's data rights.

Scopes: reading the export or the preferences needs ``read``. Changing preferences
needs ``track``, the scope of the shop's backend that already writes customers (their
addresses, attributes), so a storefront's account page needs no configuration power.
Erasure is irreversible and needs ``admin``.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator.api.idempotency import IDEMPOTENCY_PARAMETER, idempotent
from orchestrator.api.views import ApiView, _errors
from orchestrator.audience.models import Customer
from orchestrator.consent.models import Channel, ConsentRecord
from orchestrator.consent.preferences import (
    MAX_PER_WEEK,
    preferences_changes_from_document,
    preferences_get,
    preferences_update,
)
from orchestrator.privacy.services import customer_erase, customer_export

EXTERNAL_ID = OpenApiParameter(
    "external_id",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    required=True,
    description="The customer's external_id.",
)


def _customer(external_id: str) -> Customer:
    customer = Customer.objects.filter(external_id=external_id).first()
    if customer is None:
        raise NotFound(f"No customer with external_id {external_id!r}.")
    return customer


# --- Export ----------------------------------------------------------------------------


class ExportSerializer(serializers.Serializer):
    """For the schema: the sections of an export (the service builds the data)."""

    format = serializers.IntegerField(help_text="Version of this document's shape.")
    exported_at = serializers.DateTimeField()
    customer = serializers.DictField(help_text="The customer row: addresses, locale, attributes.")
    events = serializers.ListField(child=serializers.DictField())
    subscriptions = serializers.ListField(child=serializers.DictField())
    consent_records = serializers.ListField(
        child=serializers.DictField(), help_text="The consent ledger, oldest first."
    )
    channel_preference = serializers.DictField(allow_null=True)
    channel_opt_outs = serializers.ListField(child=serializers.DictField())
    suppressions = serializers.ListField(
        child=serializers.DictField(), help_text="Suppressions of the customer's addresses."
    )
    messages = serializers.ListField(
        child=serializers.DictField(),
        help_text="Every message: rendered content, decision trail and status history.",
    )
    journeys = serializers.DictField(
        required=False, help_text="Enrollments with their step log, segments, predictions."
    )
    webhooks = serializers.DictField(
        required=False, help_text="Inbound messages and the raw provider events naming them."
    )


class CustomerExportView(ApiView):
    required_scopes = ["read"]

    @extend_schema(
        operation_id="customers_export",
        tags=["customers"],
        summary="Everything held about a customer (GDPR Art. 15 and 20)",
        parameters=[EXTERNAL_ID],
        responses={200: ExportSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, external_id: str) -> Response:
        return Response(customer_export(customer=_customer(external_id)))


# --- Erasure ---------------------------------------------------------------------------


class ErasureSerializer(serializers.Serializer):
    external_id = serializers.CharField()
    erased = serializers.BooleanField()
    suppressed_channels = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices),
        help_text="Channels on which the customer's addresses are now suppressed (as hashes).",
    )
    canceled_messages = serializers.IntegerField(help_text="Messages that were still waiting.")
    deleted = serializers.DictField(
        child=serializers.IntegerField(), help_text="Rows deleted or scrubbed, by kind."
    )


class CustomerEraseView(ApiView):
    required_scopes = ["admin"]

    @extend_schema(
        operation_id="customers_erase",
        tags=["customers"],
        summary="Erase a customer (GDPR Art. 17); only hashes of the addresses are kept",
        description="Cancels waiting messages, takes the customer out of journeys, deletes "
        "their data and suppresses their addresses as hashes, so a customer created again "
        "with the same address is never messaged. Done when this answers; a second call "
        "for the same external_id answers 404.",
        parameters=[EXTERNAL_ID, IDEMPOTENCY_PARAMETER],
        request=None,
        responses={200: ErasureSerializer, **_errors(400, 401, 403, 404, 409, 422)},
    )
    @idempotent
    def post(self, request: Request, external_id: str) -> Response:
        customer = _customer(external_id)
        try:
            summary = customer_erase(customer=customer, source=ConsentRecord.Source.API)
        except Customer.DoesNotExist:  # erased by a concurrent request meanwhile
            raise NotFound(f"No customer with external_id {external_id!r}.") from None
        return Response(
            {
                "external_id": external_id,
                "erased": True,
                "suppressed_channels": summary.suppressed_channels,
                "canceled_messages": summary.canceled_messages,
                "deleted": summary.deleted,
            }
        )


# --- Preferences -----------------------------------------------------------------------


class QuietHoursSerializer(serializers.Serializer):
    start = serializers.CharField(help_text="HH:MM in the customer's time zone.")
    end = serializers.CharField(help_text="HH:MM; before start means overnight.")


class DigestChoiceSerializer(serializers.Serializer):
    cadence = serializers.ChoiceField(choices=["immediate", "daily", "weekly"])
    time = serializers.CharField(help_text="HH:MM in the customer's time zone.")
    weekday = serializers.ChoiceField(
        choices=["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
        allow_null=True,
        help_text="Weekly only.",
    )


class PreferencesSerializer(serializers.Serializer):
    """For the schema; ``orchestrator.consent.preferences`` validates and builds the data
    (the document is read and written by the same module as the preference page's
    changes, so both doors write the same ledger rows)."""

    topics = serializers.DictField(
        child=serializers.DictField(child=serializers.BooleanField()),
        help_text='Marketing topics: {"<topic>": {"<channel>": true|false}}.',
    )
    channels = serializers.DictField(
        child=serializers.BooleanField(),
        help_text="Marketing at all on each channel; false wins over every topic.",
    )
    quiet_hours = QuietHoursSerializer(allow_null=True)
    timezone = serializers.CharField(help_text="IANA time zone, e.g. Asia/Tokyo.")
    paused_until = serializers.DateTimeField(
        allow_null=True, help_text="Marketing is paused until then."
    )
    channel_order = serializers.ListField(
        child=serializers.ChoiceField(choices=Channel.choices),
        help_text='Order tried for channel "preferred".',
    )
    max_per_week = serializers.IntegerField(
        allow_null=True,
        min_value=1,
        max_value=MAX_PER_WEEK,
        help_text="The customer's own cap on marketing messages per week.",
    )
    digests = serializers.DictField(
        child=DigestChoiceSerializer(),
        help_text="Digestible topics: each message as it happens, or one daily or weekly "
        'digest: {"<topic>": {"cadence": "daily", "time": "08:00", "weekday": null}}.',
    )


class CustomerPreferencesView(ApiView):
    required_scopes = {"GET": ["read"], "PATCH": ["track"]}

    @extend_schema(
        operation_id="customers_preferences_retrieve",
        tags=["customers"],
        summary="A customer's preferences: topics by channel, quiet hours, pauses, caps",
        parameters=[EXTERNAL_ID],
        responses={200: PreferencesSerializer, **_errors(401, 403, 404)},
    )
    def get(self, request: Request, external_id: str) -> Response:
        return Response(preferences_get(customer=_customer(external_id)))

    @extend_schema(
        operation_id="customers_preferences_update",
        tags=["customers"],
        summary="Change any part of a customer's preferences; consent changes are recorded",
        parameters=[EXTERNAL_ID],
        request=PreferencesSerializer,
        responses={200: PreferencesSerializer, **_errors(400, 401, 403, 404, 413)},
    )
    def patch(self, request: Request, external_id: str) -> Response:
        customer = _customer(external_id)
        preferences_update(
            customer=customer,
            changes=preferences_changes_from_document(request.data),
            source=ConsentRecord.Source.API,
            evidence={"api_key": request.auth.prefix},
        )
        return Response(preferences_get(customer=_customer(external_id)))
