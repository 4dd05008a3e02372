"""The demo's broadcast: Stride Running's weekly newsletter, next Friday at 09:00 in each
runner's own time zone, to the saved segment ``recent-buyers`` (the promotions topic's
subscribers where that segment is not there)."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from orchestrator.broadcasts.models import Broadcast
from orchestrator.broadcasts.services import broadcast_save, broadcast_schedule
from orchestrator.consent.models import Topic
from orchestrator.delivery.models import MessageTemplate, TemplateVariant

KEY = "weekly-newsletter"

_VARIANTS = [
    {
        "channel": "email",
        "locale": "en",
        "subject": "Your week in running, {{ customer.first_name | default: 'runner' }}",
        "body": "Hi {{ customer.first_name | default: 'runner' }},\n\nThis week at "
        "{{ brand.name }}: {{ data.headline }}.\n\nUnsubscribe: {{ unsubscribe_url }}",
    },
    {
        "channel": "email",
        "locale": "ja",
        "subject": "今週のランニング情報",
        "body": "{{ customer.first_name | default: 'ランナー' }}さん\n\n今週の{{ brand.name }}: "
        "{{ data.headline_ja }}\n\n配信停止: {{ unsubscribe_url }}",
    },
    {
        "channel": "line",
        "locale": "ja",
        "body": "今週の{{ brand.name }}: {{ data.headline_ja }}",
    },
    {
        "channel": "line",
        "locale": "en",
        "body": "This week at {{ brand.name }}: {{ data.headline }}",
    },
]


def next_friday(today: dt.date) -> dt.date:
    """The coming Friday (a week on if today is Friday)."""
    return today + dt.timedelta(days=(4 - today.weekday()) % 7 or 7)


def load_newsletter(*, today: dt.date | None = None) -> Broadcast:
    """Create (or reset) the newsletter and schedule it; returns it."""
    topic = Topic.objects.get(key="promotions")
    template, _ = MessageTemplate.objects.update_or_create(
        key=KEY,
        defaults={"name": "Weekly newsletter", "topic": topic},
    )
    template.variants.all().delete()
    TemplateVariant.objects.bulk_create(TemplateVariant(template=template, **v) for v in _VARIANTS)
    from orchestrator.segments.models import Segment

    has_segment = Segment.objects.filter(key="recent-buyers").exists()
    Broadcast.objects.filter(key=KEY, materialised_at__isnull=True).delete()
    broadcast, _created = broadcast_save(
        key=KEY,
        fields={
            "name": "Stride Running weekly newsletter",
            "template": template,
            "topic": topic,
            "audience": "segment" if has_segment else "topic",
            "segment": "recent-buyers" if has_segment else "",
            "data": {
                "headline": "new trail shoes and a 10% weekend offer",
                "headline_ja": "新作トレイルシューズと週末10%オフ",
            },
            "schedule": Broadcast.Schedule.LOCAL_TIME,
            "local_date": next_friday(today or timezone.localdate()),
            "local_time": dt.time(9, 0),
            "rate_per_minute": 500,
            "ab_share": 20,
            "ab_kind": Broadcast.AbKind.SUBJECT,
            "ab_subject": "{{ customer.first_name | default: 'Runner' }}, this week's picks",
            "ab_wait": dt.timedelta(hours=2),
        },
    )
    if broadcast.status == Broadcast.Status.DRAFT:
        broadcast_schedule(broadcast=broadcast)
    return broadcast
