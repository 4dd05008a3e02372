"""InboundMessage joins delivery, in the state only: its table stays
``webhooks_inboundmessage``, created by ``webhooks.0001_initial``, rows and all."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audience", "0001_initial"),
        ("delivery", "0009_message_journey_step"),
        # The table exists once this ran, on a new database as on an old one.
        ("webhooks", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="InboundMessage",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("provider", models.CharField(max_length=32)),
                        (
                            "channel",
                            models.CharField(
                                choices=[
                                    ("email", "Email"),
                                    ("sms", "SMS"),
                                    ("whatsapp", "WhatsApp"),
                                    ("line", "LINE"),
                                ],
                                max_length=16,
                            ),
                        ),
                        ("provider_message_id", models.CharField(max_length=255)),
                        ("from_address", models.CharField(max_length=320)),
                        ("to_address", models.CharField(blank=True, default="", max_length=320)),
                        ("body", models.TextField(blank=True, default="")),
                        ("keyword", models.CharField(blank=True, default="", max_length=16)),
                        (
                            "outcome",
                            models.CharField(
                                choices=[
                                    ("opted_out", "STOP: opted out"),
                                    ("opted_in", "START: opted back in"),
                                    ("help", "HELP: help text sent"),
                                    ("reply", "Reply: recorded as an event"),
                                    ("unknown_sender", "From nobody we know"),
                                ],
                                max_length=16,
                            ),
                        ),
                        ("received_at", models.DateTimeField()),
                        (
                            "customer",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="inbound_messages",
                                to="audience.customer",
                            ),
                        ),
                        (
                            "in_reply_to",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="replies",
                                to="delivery.message",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "webhooks_inboundmessage",
                        "indexes": [
                            models.Index(
                                fields=["customer", "channel", "-received_at"],
                                name="inbound_customer_idx",
                            )
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("provider", "provider_message_id"),
                                name="inbound_message_unique",
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
