"""Journey days gain a ``held`` row per step (held messages, once each), now that hold rows
count once per cause. Rows folded before held one cause each, so their sum is the count."""

from django.db import migrations

FORWARD = """
INSERT INTO analytics_journeyday (journey_id, day, step, metric, reason, arm, count)
SELECT journey_id, day, step, 'held', '', '', sum(count)
FROM analytics_journeyday
WHERE metric IN ('deferred', 'suppressed')
GROUP BY journey_id, day, step
ON CONFLICT (journey_id, day, step, metric, reason, arm) DO NOTHING
"""

BACKWARD = "DELETE FROM analytics_journeyday WHERE metric = 'held'"


class Migration(migrations.Migration):
    dependencies = [("analytics", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
