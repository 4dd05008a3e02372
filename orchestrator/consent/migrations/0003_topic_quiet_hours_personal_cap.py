import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("consent", "0002_consent_ledger_append_only")]

    operations = [
        migrations.AddField(
            model_name="channelpreference",
            name="max_per_week",
            field=models.PositiveSmallIntegerField(
                blank=True, help_text="The customer's own limit on marketing messages per week.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="topic",
            name="quiet_hours",
            field=models.CharField(
                choices=[
                    ("default", "Default (marketing waits, transactional goes through)"),
                    ("respect", "Always wait for the end of quiet hours"),
                    ("ignore", "Never wait (urgent)"),
                ],
                default="default",
                max_length=8,
            ),
        ),
        migrations.AlterField(
            model_name="consentrecord",
            name="topic",
            field=models.ForeignKey(
                blank=True, help_text="Empty: all marketing topics.", null=True,
                on_delete=django.db.models.deletion.PROTECT, related_name="consent_records",
                to="consent.topic",
            ),
        ),
    ]
