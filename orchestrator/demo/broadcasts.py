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

#: The newsletter's content lives in its template, as a marketer writes it; each copy
#: greets the runner and names their own shoe.
_VARIANTS = [
    {
        "channel": "email",
        "locale": "en",
        "subject": "Your week in running, {{ customer.first_name | default: 'runner' }}",
        "body": "Hi {{ customer.first_name | default: 'runner' }},\n\nThis week at "
        "{{ brand.name }}: new trail shoes, and 10% off this weekend. If your "
        "{{ customer.favourite_shoe | default: 'running shoes' }} are due for a break, "
        "come by for a fitting.\n\nUnsubscribe: {{ unsubscribe_url }}\n"
        "Choose what we send you: {{ preferences_url }}",
    },
    {
        "channel": "email",
        "locale": "ja",
        "subject": "今週のランニング情報",
        "body": "{{ customer.first_name | default: 'ランナー' }}さん\n\n今週の{{ brand.name }}: "
        "新作トレイルシューズと週末10%オフ。"
        "{{ customer.favourite_shoe | default: 'シューズ' }}の買い替えもお気軽にどうぞ。"
        "\n\n配信停止: {{ unsubscribe_url }}\n配信設定: {{ preferences_url }}",
    },
    {
        "channel": "line",
        "locale": "ja",
        "body": "{{ customer.first_name | default: 'ランナー' }}さん、今週の{{ brand.name }}: "
        "新作トレイルシューズと週末10%オフ。\n配信設定: {{ preferences_url }}",
    },
    {
        "channel": "line",
        "locale": "en",
        "body": "{{ customer.first_name | default: 'Runner' }}, this week at {{ brand.name }}: "
        "new trail shoes and 10% off this weekend.\nChoose what we send you: "
        "{{ preferences_url }}",
    },
]


def next_friday(today: dt.date) -> dt.date:
    """The coming Friday (a week on if today is Friday)."""
    return today + dt.timedelta(days=(4 - today.weekday()) % 7 or 7)


def load_newsletter(*, today: dt.date | None = None) -> Broadcast:
    """Create the newsletter and schedule it, once; returns it."""
    topic = Topic.objects.get(key="promotions")
    template, _ = MessageTemplate.objects.update_or_create(
        key=KEY,
        defaults={"name": "Weekly newsletter", "topic": topic},
    )
    for variant in _VARIANTS:
        fields = {k: v for k, v in variant.items() if k not in ("channel", "locale")}
        TemplateVariant.objects.update_or_create(
            template=template,
            channel=variant["channel"],
            locale=variant["locale"],
            defaults=fields,
        )
    from orchestrator.segments.models import Segment

    has_segment = Segment.objects.filter(key="recent-buyers").exists()
    existing = Broadcast.objects.filter(key=KEY).first()
    if existing is not None:
        return existing  # loading the demo again changes nothing
    broadcast, _created = broadcast_save(
        key=KEY,
        fields={
            "name": "Stride Running weekly newsletter",
            "template": template,
            "topic": topic,
            "audience": "segment" if has_segment else "topic",
            "segment": "recent-buyers" if has_segment else "",
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
