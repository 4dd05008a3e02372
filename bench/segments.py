"""Live segment count at scale: size and reachable per channel of a saved segment.

    python -m bench.segments --customers 1000000 --events 5000000

Works on a scratch database of its own (``bench_segments``, dropped and recreated on
every run, dropped at the end unless ``--keep``), like ``bench.sweep``. It loads, with
``generate_series`` in the server, N customers (a sport and a tier as attributes, every
one an email, half a phone, a fifth a LINE id) and M events (a third ``order.completed``)
spread over the past year, a few suppressions and channel opt-outs, and the segment
"Runners who bought in the last 90 days". Then it counts it as the admin's live count
does (``segment_count``: size and reachable per channel in one statement), ``--repeat``
times after one warm-up, and prints the median, and a nested segment for comparison.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

BENCH_DATABASE = "bench_segments"
EVENT_INDEXES = {
    "event_customer_name_idx": "(customer_id, name, occurred_at DESC)",
    "event_name_time_idx": "(name, occurred_at DESC)",
    "segments_event_membership_idx": "(name, occurred_at) INCLUDE (customer_id)",
}
RECENT_BUYERS = {
    "all": [
        {"type": "attribute", "name": "sport", "op": "eq", "value": "running"},
        {"type": "event", "name": "order.completed", "op": "happened", "within_days": 90},
    ]
}
#: A heavier tree: recent buyers, who are gold or opened the app twice, not opted out of SMS.
NESTED = {
    "all": [
        {"segment": "recent-buyers"},
        {
            "any": [
                {"type": "attribute", "name": "tier", "op": "eq", "value": "gold"},
                {"type": "event", "name": "app.opened", "op": "happened", "at_least": 2},
            ]
        },
        {"not": {"type": "event", "name": "order.refunded", "op": "happened", "within_days": 30}},
    ]
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def seed(customers: int, events: int) -> None:
    from django.core.management import call_command
    from django.db import connection

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    log(f"migrated in {time.perf_counter() - started:.1f} s")
    per_customer = max(events // max(customers, 1), 1)
    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute(
            """
            INSERT INTO audience_customer (external_id, email, phone, whatsapp, line_user_id,
                locale, timezone, attributes, created_at, updated_at)
            SELECT 'bench-' || i, 'customer' || i || '@example.com',
                   CASE WHEN i %% 2 = 0 THEN '+1555' || lpad(i::text, 8, '0') ELSE '' END, '',
                   CASE WHEN i %% 5 = 0 THEN 'U' || md5(i::text) ELSE '' END, 'en', 'UTC',
                   jsonb_build_object(
                       'sport', (ARRAY['running', 'trail', 'cycling', 'swimming'])[1 + i %% 4],
                       'tier', (ARRAY['bronze', 'silver', 'gold'])[1 + i %% 3],
                       'first_name', 'name' || i),
                   now(), now()
            FROM generate_series(1, %s) AS i
            """,
            [customers],
        )
        log(f"{customers} customers in {time.perf_counter() - started:.1f} s")
        for name in EVENT_INDEXES:
            cursor.execute(f"DROP INDEX {name}")
        started = time.perf_counter()
        cursor.execute(
            """
            INSERT INTO audience_event (customer_id, name, properties, occurred_at,
                received_at, source)
            SELECT c.id,
                   (ARRAY['order.completed', 'app.opened', 'page.viewed', 'order.refunded',
                          'order.completed', 'app.opened'])[1 + (c.id * 7 + k) %% 6],
                   jsonb_build_object('sku', 'sku-' || (c.id + k) %% 50),
                   now() - ((c.id * 31 + k * 97) %% 365) * interval '1 day',
                   now(), 'bench'
            FROM audience_customer c, generate_series(1, %s) AS k
            """,
            [per_customer],
        )
        log(f"{customers * per_customer} events in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        for name, columns in EVENT_INDEXES.items():
            cursor.execute(f"CREATE INDEX {name} ON audience_event {columns}")
        # A few suppressions and opt-outs, so that reachability has something to subtract.
        cursor.execute(
            """
            INSERT INTO consent_suppression (channel, address_hash, reason, detail, sender,
                created_at)
            SELECT 'email', encode(sha256(convert_to('email:' || lower(btrim(email)), 'UTF8')),
                   'hex'), 'bounce', '', '', now()
            FROM audience_customer WHERE id % 1000 = 0
            """
        )
        cursor.execute(
            """
            INSERT INTO consent_channeloptout (customer_id, channel, source, created_at)
            SELECT id, 'sms', 'inbound_keyword', now() FROM audience_customer
            WHERE id % 200 = 0 AND phone <> ''
            """
        )
        # What autovacuum does after a bulk load: the visibility map lets the event index
        # answer without reading event rows.
        cursor.execute("VACUUM ANALYZE audience_customer")
        cursor.execute("VACUUM ANALYZE audience_event")
        log(f"indexes and analyze in {time.perf_counter() - started:.1f} s")


def timed(audience, repeat: int) -> tuple[float, object]:
    from orchestrator.segments.selectors import segment_count

    segment_count(audience)  # warm-up: the first run also reads the pages into the cache
    runs = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = segment_count(audience)
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", default=BENCH_DATABASE)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)

    from bench.dispatch import drop_database, setup_django

    setup_django(args.database)
    seed(args.customers, args.events)
    from orchestrator.segments.services import segment_save

    segment, _ = segment_save(
        key="recent-buyers", name="Runners who bought in the last 90 days", conditions=RECENT_BUYERS
    )
    nested_ms, nested = timed(NESTED, args.repeat)
    ms, count = timed(segment, args.repeat)
    if not args.keep:
        drop_database(args.database)
    reach = ", ".join(f"{c} {n}" for c, n in count.reachable.items())
    print(f"customers={args.customers} events={args.events} repeat={args.repeat}")
    print(f"reachable: {reach}")
    print(f"nested segment (a segment, any-of, not): {nested.size} customers in {nested_ms:.0f} ms")
    print(f"segment count: {count.size} customers in {ms:.0f} ms")


if __name__ == "__main__":
    main()
