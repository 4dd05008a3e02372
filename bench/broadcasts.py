"""Broadcast materialisation at scale: N customers' messages written into the outbox.

    python -m bench.broadcasts --customers 1000000

Works on a scratch database of its own (``bench_broadcasts``, dropped and recreated on
every run, dropped at the end unless ``--keep``), like ``bench.sweep``. It loads N
customers in eight time zones with one statement over ``generate_series`` (half with an
email address, a quarter with a phone only, a quarter with both; one in ten with their
own channel order), a default opt-in marketing topic and a template on email and SMS.
Then it times ``materialise`` of a broadcast "at 09:00 in each customer's own time
zone" with a deadline: INSERT ... SELECT statements that route each customer's channel,
compute their send time in SQL and write every message with its first history row (two
connections at once, each a range of customer ids, from 50,000 customers up).
The local date is yesterday, so every copy is due at once: the outbox then holds N
waiting broadcast messages, and a transactional message queued after them must still
be claimed in the dispatcher's first batch (priority).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

BENCH_DATABASE = "bench_broadcasts"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def seed(customers: int) -> None:
    from django.core.management import call_command
    from django.db import connection

    from bench.dispatch import TIMEZONES

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    log(f"migrated in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO audience_customer (external_id, email, phone, whatsapp, line_user_id,
                locale, timezone, attributes, created_at, updated_at)
            SELECT 'bench-' || i,
                CASE WHEN i %% 4 <> 1 THEN 'customer' || i || '@example.com' ELSE '' END,
                CASE WHEN i %% 4 IN (1, 2) THEN '+1415' || lpad((i %% 10000000)::text, 7, '0')
                    ELSE '' END,
                '', '', CASE WHEN i %% 3 = 0 THEN 'ja' ELSE 'en' END,
                (%(zones)s::text[])[1 + i %% %(nzones)s],
                jsonb_build_object('first_name', 'name' || i), now(), now()
            FROM generate_series(0, %(n)s - 1) AS i
            """,
            {"zones": TIMEZONES, "nzones": len(TIMEZONES), "n": customers},
        )
        cursor.execute(
            """
            INSERT INTO consent_channelpreference (customer_id, channel_order, updated_at)
            SELECT id, ARRAY['sms', 'email'], now() FROM audience_customer WHERE id % 10 = 0
            """
        )
        cursor.execute("ANALYZE")
    log(f"{customers} customers inserted in {time.perf_counter() - started:.1f} s")


def make_broadcast(now: dt.datetime):
    from orchestrator.broadcasts.models import Broadcast
    from orchestrator.consent.models import Topic
    from orchestrator.delivery.models import MessageTemplate, TemplateVariant

    topic = Topic.objects.create(
        key="newsletter", name="Newsletter", default_opt_in=True, channels=["email", "sms"]
    )
    template = MessageTemplate.objects.create(key="weekly", name="Weekly", topic=topic)
    TemplateVariant.objects.create(
        template=template,
        channel="email",
        locale="en",
        subject="This week",
        body="Hi {{ customer.first_name }}",
    )
    TemplateVariant.objects.create(template=template, channel="sms", locale="en", body="This week")
    yesterday = (now - dt.timedelta(days=1)).date()
    return Broadcast.objects.create(
        key="weekly",
        name="Weekly newsletter",
        template=template,
        topic=topic,
        schedule=Broadcast.Schedule.LOCAL_TIME,
        local_date=yesterday,
        local_time=dt.time(9, 0),
        expires_at=now + dt.timedelta(days=2),
        status=Broadcast.Status.SCHEDULED,
        due_at=now,
    )


def transactional_goes_first() -> tuple[bool, int]:
    """Queue a receipt after the broadcast, dispatch one small batch: was it in it?"""
    from django.db import transaction

    from orchestrator.audience.models import Customer
    from orchestrator.consent.models import Topic
    from orchestrator.delivery.dispatcher import dispatch_batch
    from orchestrator.delivery.models import Message, MessageTemplate, TemplateVariant
    from orchestrator.delivery.services import message_create

    receipts = Topic.objects.create(key="receipts", name="Receipts", kind="transactional")
    template = MessageTemplate.objects.create(key="receipt", name="Receipt", topic=receipts)
    TemplateVariant.objects.create(
        template=template, channel="email", locale="en", subject="Receipt", body="Thanks"
    )
    customer = Customer.objects.exclude(email="").order_by("id").first()
    with transaction.atomic():
        message = message_create(customer=customer, template=template, channel="email")
    waiting = Message.objects.filter(broadcast_id__isnull=False, status="queued").count()
    dispatch_batch(batch_size=20)
    message.refresh_from_db()
    return message.status == "sent", waiting


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--database", default=BENCH_DATABASE)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)

    from bench.dispatch import drop_database, setup_django

    setup_django(args.database)
    from django.utils import timezone

    from orchestrator.broadcasts.materialise import materialise

    now = timezone.now().replace(microsecond=0)
    seed(args.customers)
    broadcast = make_broadcast(now)
    started = time.perf_counter()
    written = materialise(broadcast, now=now)
    seconds = time.perf_counter() - started
    again = materialise(broadcast, now=now)
    first, waiting = transactional_goes_first()
    if not args.keep:
        drop_database(args.database)
    print(f"re-run inserted {again} messages (unique per broadcast and customer)")
    print(
        "transactional message queued after the broadcast: "
        + ("sent in the first batch" if first else "NOT in the first batch")
        + f", ahead of {waiting} waiting broadcast messages"
    )
    print(f"materialised {written} messages in {seconds:.2f} s")
    if again or not first:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
