"""Messages record the broadcast (and A/B variant) that queued them; one per customer."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("delivery", "0012_digests"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="broadcast_id",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="broadcast_variant",
            field=models.CharField(blank=True, default="", max_length=1),
        ),
        migrations.AlterField(
            model_name="message",
            name="source",
            field=models.CharField(
                choices=[
                    ("api", "API"),
                    ("journey", "Journey"),
                    ("broadcast", "Broadcast"),
                    ("admin", "Admin"),
                    ("demo", "Demo"),
                    ("system", "System"),
                ],
                default="api",
                max_length=16,
            ),
        ),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.UniqueConstraint(
                condition=models.Q(("broadcast_id__isnull", False)),
                fields=("broadcast_id", "customer"),
                name="message_broadcast_customer_uniq",
            ),
        ),
    ]
