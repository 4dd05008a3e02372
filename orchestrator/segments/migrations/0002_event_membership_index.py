"""An index that answers "who did event X since T" from the index alone.

Segment conditions on event history select ``customer_id`` by ``(name, occurred_at)``;
with ``customer_id`` in the index PostgreSQL reads no event rows (an index-only scan),
which is most of a live count's time on millions of events.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("segments", "0001_initial"),
        ("audience", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS segments_event_membership_idx"
            " ON audience_event (name, occurred_at) INCLUDE (customer_id)",
            "DROP INDEX IF EXISTS segments_event_membership_idx",
        ),
    ]
