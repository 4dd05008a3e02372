"""Who a broadcast goes to, as SQL selecting customer ids: a saved segment or a topic's
subscribers. The materialisation and the forecast both read it, never a Python list."""

from __future__ import annotations

from django.db import connection

from orchestrator.broadcasts.models import Broadcast


class AudienceMissing(LookupError):
    """The broadcast's saved segment does not exist (any more)."""


def topic_subscribers_sql(topic_id: int, default_opt_in: bool) -> tuple[str, list]:
    """Customers subscribed to the topic on some channel. For a default opt-in topic,
    everyone except those who opted out on every channel they had a row for; the
    dispatcher still checks each channel's consent at send time."""
    if default_opt_in:
        return (
            "SELECT c.id FROM audience_customer c WHERE c.id NOT IN ("
            " SELECT s.customer_id FROM consent_subscription s WHERE s.topic_id = %s"
            " GROUP BY s.customer_id HAVING bool_and(s.status = 'unsubscribed'))",
            [topic_id],
        )
    return (
        "SELECT DISTINCT s.customer_id FROM consent_subscription s"
        " WHERE s.topic_id = %s AND s.status = 'subscribed'",
        [topic_id],
    )


def segment_sql(key: str) -> tuple[str, list]:
    """The saved segment's members query (``orchestrator.segments``)."""
    from orchestrator.segments.models import Segment
    from orchestrator.segments.selectors import members_query

    segment = Segment.objects.filter(key=key).first()
    if segment is None:
        raise AudienceMissing(f"No saved segment {key!r}.")
    sql, params = members_query(segment)
    return sql, list(params)


def audience_sql(broadcast: Broadcast) -> tuple[str, list]:
    """(sql, params) selecting the ids of the broadcast's audience, one column."""
    if broadcast.audience == Broadcast.Audience.SEGMENT:
        try:
            return segment_sql(broadcast.segment)
        except ImportError:
            raise AudienceMissing("Saved segments are not available.") from None
    topic = broadcast.topic
    return topic_subscribers_sql(topic.id, topic.default_opt_in)


def audience_size(broadcast: Broadcast) -> int:
    sql, params = audience_sql(broadcast)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({sql}) AS audience", params)  # noqa: S608
        return cursor.fetchone()[0]
