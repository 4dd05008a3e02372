"""/metrics stays cheap on a big table: its queries read the partial indexes, never the table.

The tables get 50,000 finished rows next to a small backlog and are ANALYZEd, so the
planner decides as it would in production; a sequential scan here would be a scan of
every message ever sent on each scrape.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from journeys.enrollment import Candidate, enroll
from journeys.models import Enrollment
from orchestrator.delivery.models import Message
from orchestrator.ops import metrics
from tests.delivery.factories import make_customer, make_template, make_topic, queue
from tests.journeys.conftest import make_journey, send

pytestmark = pytest.mark.django_db

FINISHED = 50_000


def _copy_rows(model, source_id: int, n: int, overrides: dict[str, str]) -> None:
    """Insert ``n`` copies of one row, some columns replaced by SQL expressions of ``g``."""
    columns = [f.column for f in model._meta.concrete_fields if f.column != "id"]
    values = [overrides.get(c, f'src."{c}"') for c in columns]
    quoted = ", ".join(f'"{c}"' for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {model._meta.db_table} ({quoted})"
            f" SELECT {', '.join(values)} FROM {model._meta.db_table} src,"
            f" generate_series(1, {n}) AS g WHERE src.id = %s",
            [source_id],
        )
        cursor.execute(f"ANALYZE {model._meta.db_table}")


def _plan(sql: str, params=None) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.fixture
def big_message_table():
    template = make_template(topic=make_topic())
    customer = make_customer()
    sent = queue(customer, template)
    Message.objects.filter(pk=sent.pk).update(status="sent")
    _copy_rows(Message, sent.pk, FINISHED, {"status": "'sent'"})
    for i in range(20):
        queue(customer, template, send_at=timezone.now() + dt.timedelta(hours=i - 10))
    sending = queue(customer, template)
    Message.objects.filter(pk=sending.pk).update(status="sending", claimed_at=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE delivery_message")


def test_backlog_queries_use_the_claim_index(big_message_table):
    for sql, params in (
        (metrics._WAITING_SQL, {"now": timezone.now()}),
        (metrics._OLDEST_SQL, None),
    ):
        plan = _plan(sql, params)
        assert "message_claim_idx" in plan, plan
        assert "Seq Scan on delivery_message" not in plan, plan


def test_the_oldest_due_probe_is_one_short_index_seek_per_priority(big_message_table):
    plan = _plan(metrics._OLDEST_SQL)
    assert "Limit" in plan, plan
    assert "Sort" not in plan, plan  # the index gives send_after order within a priority


def test_sending_count_uses_the_sending_index(big_message_table):
    plan = _plan(metrics._SENDING_SQL)
    assert "message_sending_idx" in plan, plan
    assert "Seq Scan on delivery_message" not in plan, plan


def test_awaiting_reconciliation_count_uses_the_sending_index(big_message_table):
    plan = _plan(metrics._AWAITING_RECONCILIATION_SQL, {"stalled": timezone.now()})
    assert "message_sending_idx" in plan, plan
    assert "Seq Scan on delivery_message" not in plan, plan


def test_active_enrollments_count_uses_the_partial_due_index():
    make_template("journey-hello", topic=make_topic("journey-news"))
    journey = make_journey([send()])
    customer = make_customer()
    [finished] = enroll(journey, [Candidate(customer.id, "seed", {})])
    Enrollment.objects.filter(pk=finished).update(status="completed")
    _copy_rows(
        Enrollment,
        finished,
        FINISHED,
        {"status": "'completed'", "occurrence": "'copy-' || g", "due_at": "NULL"},
    )
    enroll(journey, [Candidate(customer.id, f"live-{i}", {}) for i in range(10)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE journeys_enrollment")

    plan = _plan(metrics._ENROLLMENTS_SQL)

    assert "enrollment_due_idx" in plan, plan
    assert "Seq Scan on journeys_enrollment" not in plan, plan
    with connection.cursor() as cursor:
        cursor.execute(metrics._ENROLLMENTS_SQL)
        assert cursor.fetchone()[0] == 10
