"""InboundMessage leaves the webhooks app's state for delivery's; its table and rows
stay as they are (``delivery.0010_inboundmessage`` takes it over)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
        ("delivery", "0010_inboundmessage"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="InboundMessage")],
            database_operations=[],
        ),
    ]
