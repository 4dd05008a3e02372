"""Journey engine throughput: enroll N customers, then time the engine moving them through
a send step into a wait (the message built and queued in the outbox, the step logged).

    python -m bench.engine --customers 50000 [--batch-size 200] [--workers 1]

Works on a scratch database of its own (``bench_engine``), dropped and recreated on
every run, like ``bench.dispatch``. ``--workers`` runs that many engine processes at
once (the ``journeys.tick`` task's loop), sharing the work through SKIP LOCKED.
The last line printed is the result.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

BENCH_DATABASE = "bench_engine"


def seed(customers: int) -> int:
    from django.core.management import call_command
    from django.db import connection

    from journeys.enrollment import enroll_select
    from journeys.services import journey_activate, journey_save
    from orchestrator.consent.models import Topic
    from orchestrator.delivery.models import MessageTemplate, TemplateVariant

    call_command("migrate", verbosity=0)
    topic = Topic.objects.create(key="orders", name="Orders", kind="transactional")
    template = MessageTemplate.objects.create(key="follow-up", name="Follow-up", topic=topic)
    for channel in ("email", "sms"):
        TemplateVariant.objects.create(
            template=template,
            channel=channel,
            locale="en",
            subject="Thanks {{ customer.first_name }}",
            body="Thanks for order {{ data.order_id }}",
        )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO audience_customer (external_id, email, phone, whatsapp, line_user_id,
                locale, timezone, attributes, created_at, updated_at)
            SELECT 'bench-' || i, 'c' || i || '@example.com', '+1415' || lpad(i::text, 7, '0'),
                '', '', 'en', 'UTC', jsonb_build_object('first_name', 'name' || i), now(), now()
            FROM generate_series(1, %s) AS i
            """,
            [customers],
        )
    journey = journey_save(
        {
            "key": "follow-up",
            "name": "Follow-up",
            "topic": "orders",
            "trigger": {"kind": "manual"},
            "steps": [
                {
                    "key": "send",
                    "kind": "send",
                    "next": "wait",
                    "config": {"template": "follow-up", "channel": "preferred"},
                },
                {"key": "wait", "kind": "wait", "config": {"minutes": 60 * 24}},
            ],
        }
    )
    journey_activate(journey=journey)
    journey.refresh_from_db()
    ids = enroll_select(
        journey,
        "SELECT id, 'bench', jsonb_build_object('order_id', 'SR-' || id), NULL::timestamptz "
        "FROM audience_customer",
        [],
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return len(ids)


def _worker(batch_size: int) -> int:
    import django

    django.setup()
    from journeys import engine

    messages = 0
    while True:
        stats = engine.advance_batch(batch_size=batch_size)
        messages += stats.messages
        if not stats.claimed:
            return messages


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database", default=BENCH_DATABASE)
    args = parser.parse_args(argv)

    from bench.dispatch import drop_database, log, setup_django

    setup_django(args.database)
    from django.db import connection

    started = time.perf_counter()
    enrolled = seed(args.customers)
    log(f"seeded and enrolled {enrolled} customers in {time.perf_counter() - started:.1f} s")
    connection.close()

    started = time.perf_counter()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.workers) as pool:
        messages = sum(pool.map(_worker, [args.batch_size] * args.workers))
    elapsed = time.perf_counter() - started

    from orchestrator.delivery.models import Message

    queued = Message.objects.filter(journey="follow-up").count()
    connection.close()
    drop_database(args.database)
    if queued != enrolled:
        raise SystemExit(f"expected {enrolled} messages, found {queued}")
    print(
        f"engine moved {enrolled} enrollments through a send step into a wait in "
        f"{elapsed:.1f} s: {messages / elapsed:.0f} enrollments/s "
        f"({args.workers} worker(s), batch {args.batch_size})"
    )


if __name__ == "__main__":
    main()
