"""Customers (one row per person, with every address we may reach them at) and their events."""

from __future__ import annotations

from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import Q

from orchestrator.audience.validators import validate_e164, validate_locale, validate_timezone

#: The field holding a customer's address on each channel they can be reached on.
ADDRESS_FIELDS = {"email": "email", "sms": "phone", "whatsapp": "whatsapp", "line": "line_user_id"}


class Customer(models.Model):
    external_id = models.CharField(max_length=255, unique=True)
    email = models.EmailField(max_length=254, blank=True, default="")
    phone = models.CharField(
        max_length=20,
        blank=True,
        default="",
        validators=[validate_e164],
        help_text="E.164, e.g. +819012345678",
    )
    whatsapp = models.CharField(
        max_length=20,
        blank=True,
        default="",
        validators=[validate_e164],
        help_text="E.164 number registered with WhatsApp",
    )
    line_user_id = models.CharField(max_length=64, blank=True, default="")
    locale = models.CharField(max_length=16, default="en", validators=[validate_locale])
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["email"], name="customer_email_idx", condition=~Q(email="")),
            models.Index(fields=["phone"], name="customer_phone_idx", condition=~Q(phone="")),
            GinIndex(fields=["attributes"], name="customer_attributes_gin"),
        ]

    def __str__(self) -> str:
        return self.external_id

    def address_for(self, channel: str) -> str:
        field = ADDRESS_FIELDS.get(channel)
        return getattr(self, field) if field else ""


class Event(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="events")
    name = models.CharField(max_length=200)
    properties = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    event_id = models.CharField(
        max_length=255,
        null=True,
        blank=True,
        help_text="Client-supplied id; a repeat for the same customer is ignored.",
    )
    source = models.CharField(max_length=32, default="api")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "event_id"],
                name="event_unique_client_id",
                condition=Q(event_id__isnull=False),
            ),
        ]
        indexes = [
            models.Index(
                fields=["customer", "name", "-occurred_at"], name="event_customer_name_idx"
            ),
            models.Index(fields=["name", "-occurred_at"], name="event_name_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.customer_id})"
