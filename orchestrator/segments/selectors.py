"""Reads of saved segments: who is in one, how many, how many reachable, and history.

Membership is one SQL statement over ``audience_customer c`` (``sql.tree_sql``), never a
loop over customers. ``members_query`` is the interface for senders (broadcasts):
``cursor.execute(*members_query(segment))`` yields customer ids.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from orchestrator.consent.models import Topic
from orchestrator.consent.senders import channel_from_number
from orchestrator.delivery.models import MessageTemplate
from orchestrator.segments import sql as segment_sql
from orchestrator.segments.models import Segment, SegmentSize
from orchestrator.segments.tree import CHANNELS, Lookups, Problem, referenced, tree_problems

#: Memory for the hash of a condition's customer ids inside OR/NOT (a hashed subplan
#: only runs when it fits; otherwise PostgreSQL probes the subquery per customer).
WORK_MEM = "64MB"

Audience = Segment | str | dict | list


class SegmentMissing(LookupError):
    pass


def replenishment_available() -> bool:
    """Whether journeys' replenishment predictions exist to be read (see ``sql``)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [segment_sql.REPLENISHMENT_TABLE])
        return bool(cursor.fetchone()[0])


def _segment_tree(key: str) -> Any:
    tree = Segment.objects.filter(key=key).values_list("conditions", flat=True).first()
    if tree is None:
        raise SegmentMissing(f"There is no saved segment {key!r}.")
    return tree


def lookups() -> Lookups:
    return Lookups(
        segment=lambda key: (
            Segment.objects.filter(key=key).values_list("conditions", flat=True).first()
        ),
        topic_exists=lambda key: Topic.objects.filter(key=key).exists(),
        template_exists=lambda key: MessageTemplate.objects.filter(key=key).exists(),
        replenishment_available=replenishment_available,
    )


def segment_problems(tree: Any, *, key: str | None = None) -> list[Problem]:
    """Every problem of a condition tree (as the segment ``key``, for cycles)."""
    return tree_problems(tree, lookups(), key=key)


def _tree(segment: Audience) -> Any:
    if isinstance(segment, Segment):
        return segment.conditions
    if isinstance(segment, str):
        return _segment_tree(segment)
    return segment


def _senders() -> dict[str, str]:
    return {channel: channel_from_number(channel) for channel in CHANNELS}


def where_sql(segment: Audience, *, now: dt.datetime | None = None) -> tuple[str, list[Any]]:
    """The segment as a boolean over ``audience_customer c``."""
    return segment_sql.tree_sql(
        _tree(segment) or {"all": []},
        now=now or timezone.now(),
        resolve=_segment_tree,
        senders=_senders(),
    )


def members_query(segment: Audience, *, now: dt.datetime | None = None) -> tuple[str, list[Any]]:
    """``SELECT c.id FROM audience_customer c WHERE <segment>``: the members' customer ids.

    ``segment`` is a ``Segment``, a segment key or a condition tree. ``now`` anchors "in
    the last N days" (this moment when None). Wrap it as a subquery to join or page.
    """
    where, params = where_sql(segment, now=now)
    return f"SELECT c.id FROM audience_customer c WHERE {where}", params  # noqa: S608


def members_among(
    segment: Audience, customer_ids: list[int], *, now: dt.datetime | None = None
) -> set[int]:
    """Which of ``customer_ids`` are members: one statement for a whole batch."""
    if not customer_ids:
        return set()
    where, params = where_sql(segment, now=now)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.id FROM audience_customer c WHERE c.id = ANY(%s) AND {where}",  # noqa: S608
            [list(customer_ids), *params],
        )
        return {row[0] for row in cursor.fetchall()}


@dataclass(frozen=True)
class SegmentCount:
    size: int
    #: Channel -> members with an address there, not suppressed, not opted out of
    #: marketing on it (the consent rules that hold whatever the topic).
    reachable: dict[str, int]
    milliseconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, "reachable": self.reachable}


def segment_count(segment: Audience, *, now: dt.datetime | None = None) -> SegmentCount:
    """Size and reachable members per channel, in one statement."""
    started = timezone.now()
    where, params = where_sql(segment, now=now)
    senders = _senders()
    columns, reach_params = [], []
    for channel in CHANNELS:
        test, p = segment_sql.reach_sql(channel, sender=senders[channel])
        columns.append(f"count(*) FILTER (WHERE {test})")
        reach_params += p
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
        cursor.execute(
            f"SELECT count(*), {', '.join(columns)} FROM audience_customer c WHERE {where}",  # noqa: S608
            [*reach_params, *params],
        )
        size, *reach = cursor.fetchone()
    elapsed = (timezone.now() - started).total_seconds() * 1000
    return SegmentCount(size, dict(zip(CHANNELS, reach, strict=True)), elapsed)


def segment_sample(
    segment: Audience, n: int = 10, *, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Up to ``n`` members (id, external id, email), the same ones for the same audience."""
    where, params = where_sql(segment, now=now)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
        cursor.execute(
            "SELECT c.id, c.external_id, c.email FROM audience_customer c"  # noqa: S608
            f" WHERE {where} ORDER BY c.id LIMIT %s",
            [*params, n],
        )
        rows = cursor.fetchall()
    return [{"id": i, "external_id": e, "email": m} for i, e, m in rows]


def segment_sizes(segment: Segment, *, days: int = 90) -> list[SegmentSize]:
    """The recorded daily sizes of the last ``days`` days, oldest first."""
    since = timezone.now().date() - dt.timedelta(days=days)
    return list(segment.sizes.filter(day__gte=since).order_by("day"))


def segments_using(key: str) -> list[str]:
    """Keys of the saved segments that name ``key`` in their conditions."""
    return [
        s.key
        for s in Segment.objects.exclude(key=key).only("key", "conditions")
        if key in referenced(s.conditions)
    ]
